// A table sortable by any column (click a header; again to reverse). Empty values sort last either way.
import { h, replace } from "./dom.js";

/**
 * @param {object} spec
 * @param {Array<{key: string, label: string, unit?: string, numeric?: boolean, value: function, cell?: function}>}
 *   spec.columns  ``value(row)`` is what sorts (number, string or null); ``cell(row)`` what is shown
 *   (default: the value).
 * @param {Array<object>} spec.rows
 * @param {string} [spec.caption]
 * @param {function} [spec.rowClass]  CSS class of a row
 * @param {string} [spec.id]
 * @returns {{element: HTMLElement, setRows: function}}
 */
export function sortableTable({ columns, rows, caption = "", rowClass = null, id = null }) {
  let sortKey = null, ascending = true, current = rows.slice();
  const tbody = h("tbody");
  const headers = columns.map((col) => {
    const label = col.unit ? `${col.label} (${col.unit})` : col.label;
    const th = h("th", { scope: "col", class: `col-${col.key}${col.numeric ? " num" : ""}`, "data-key": col.key },
      h("button", { type: "button", class: "sort", title: `sort by ${label}`, onclick: () => sortBy(col.key) }, label));
    return th;
  });
  const table = h("table", { id, class: "results" }, caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers)), tbody);

  function sortBy(key) {
    ascending = sortKey === key ? !ascending : defaultAscending(key);
    sortKey = key;
    render();
  }

  function defaultAscending(key) {
    const col = columns.find((c) => c.key === key);
    return !(col && col.numeric && col.descendingFirst);
  }

  function render() {
    let shown = current;
    if (sortKey !== null) {
      const col = columns.find((c) => c.key === sortKey);
      shown = current.map((row, i) => ({ row, i, v: col.value(row) }));
      shown.sort((a, b) => compare(a.v, b.v, ascending) || a.i - b.i);
      shown = shown.map((x) => x.row);
    }
    headers.forEach((th, i) => {
      if (columns[i].key === sortKey) th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    replace(tbody, shown.map((row) => h("tr", { class: rowClass ? rowClass(row) : null },
      columns.map((col) => {
        const content = col.cell ? col.cell(row) : col.value(row);
        return h(col.rowHeader ? "th" : "td", { class: `col-${col.key}${col.numeric ? " num" : ""}`,
                                                scope: col.rowHeader ? "row" : null },
          content === null || content === undefined ? "–" : content);
      }))));
  }

  render();
  return {
    element: table,
    setRows(newRows) { current = newRows.slice(); render(); },
    sortBy,
  };
}

function compare(a, b, ascending) {
  const emptyA = a === null || a === undefined || a === "" || Number.isNaN(a);
  const emptyB = b === null || b === undefined || b === "" || Number.isNaN(b);
  if (emptyA || emptyB) return emptyA === emptyB ? 0 : emptyA ? 1 : -1;
  let order;
  if (typeof a === "number" && typeof b === "number") order = a - b;
  else if (typeof a === "boolean" && typeof b === "boolean") order = Number(a) - Number(b);
  else order = String(a).localeCompare(String(b), undefined, { numeric: true, sensitivity: "base" });
  return ascending ? order : -order;
}

// What every page shares: the header's API-key button.
import { installKeyButton } from "./api.js";

/** Wire the header of a page. */
export function initPage() {
  installKeyButton(document.getElementById("key-button"));
  document.documentElement.classList.add("js");
}

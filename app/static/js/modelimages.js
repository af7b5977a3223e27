// The figures stored with a model (GET /models/{ref}/images): parity, calibration, learning curves, history.
import { api, loadImage } from "./api.js";
import { h, replace } from "./dom.js";

/** A grid of a model's figures, filled once the list arrives ("no figures" when it has none). */
export function modelImages(ref) {
  const box = h("div", { class: "figures model-images", "data-model": ref },
    h("p", { class: "muted" }, "loading figures…"));
  api(`/models/${encodeURIComponent(ref).replace(/%2F/g, "/").replace(/%3A/g, ":")}/images`)
    .then((answer) => {
      if (!answer.images.length) {
        replace(box, h("p", { class: "muted" }, "This model was stored without figures."));
        return;
      }
      replace(box, answer.images.map((image) => {
        const img = h("img", { alt: `${image.title} of ${answer.model}`, "data-name": image.name });
        loadImage(img, image.url);
        return h("figure", {}, img, h("figcaption", {}, image.title));
      }));
    })
    .catch((err) => replace(box, h("p", { class: "error" }, `figures unavailable: ${err.message}`)));
  return box;
}

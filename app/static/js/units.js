// Units of the results: the ``units`` field of POST /predict and POST /screenings. The service converts
// (gravimetric mol/kg → volumetric cm³(STP)/cm³ with each crystal's density); the page only labels.

const STORAGE = "retnet.units";

/** What the service can give for a model whose output is in ``modelUnit`` ("mol/kg" asks for the model's own). */
export function unitChoices(modelUnit) {
  if (modelUnit && modelUnit !== "mol/kg") {
    return [{ value: "mol/kg", label: `${unitLabel(modelUnit)} (the model's unit)` }];
  }
  return [{ value: "mol/kg", label: "mol/kg (per mass)" },
          { value: "cm3(STP)/cm3", label: "cm³(STP)/cm³ (per crystal volume)" }];
}

/** A unit as it is printed: cm3 → cm³. */
export function unitLabel(unit) {
  return String(unit ?? "").replace(/cm3/g, "cm³");
}

/**
 * The unit of the training labels next to a prediction (``neighbours[].label``): the model's own unit, which is
 * mol/kg whenever the service converted to cm³(STP)/cm³ (it only does so for models in mol/kg).
 */
export function labelUnit(prediction) {
  return prediction.unit === "cm3(STP)/cm3" ? "mol/kg" : prediction.unit;
}

export function storedUnits() {
  try { return localStorage.getItem(STORAGE) || "mol/kg"; } catch { return "mol/kg"; }
}

export function storeUnits(value) {
  try { localStorage.setItem(STORAGE, value); } catch { /* not kept */ }
}

// The Models page: the painting picker shows only for "any painting"; picking an example clears a chosen file.
(function () {
  const model = document.getElementById("apply-model");
  const painting = document.getElementById("apply-painting");
  if (!model || !painting) return;
  const show = () => { painting.hidden = model.value !== painting.dataset.model; };
  model.addEventListener("change", show);
  show();
  const file = document.getElementById("apply-style");
  const radios = painting.querySelectorAll('input[name="style_example"]');
  file.addEventListener("change", () => { if (file.files.length) radios.forEach((r) => (r.checked = false)); });
  radios.forEach((r) => r.addEventListener("change", () => { if (r.checked) file.value = ""; }));
  const strength = document.getElementById("apply-strength");
  const out = document.getElementById("apply-strength-out");
  if (strength && out) strength.addEventListener("input", () => { out.textContent = `×${strength.value}`; });
})();

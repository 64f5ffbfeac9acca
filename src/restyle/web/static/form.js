// The job form: show the strength slider as a factor, and say when the upload wins over an example.
(function () {
  const slider = document.getElementById("f-strength");
  const out = document.getElementById("f-strength-out");
  function show() {
    const f = Math.pow(2, parseFloat(slider.value));
    out.textContent = "×" + (f >= 1 ? f.toFixed(f >= 4 ? 0 : 1) : "1/" + (1 / f).toFixed(1).replace(/\.0$/, ""));
  }
  if (slider && out) { slider.addEventListener("input", show); show(); }
  // Picking an example clears a chosen file of the same role and the other way round.
  for (const role of ["content", "style"]) {
    const file = document.getElementById(role);
    const radios = document.querySelectorAll(`input[name="${role}_example"]`);
    if (!file) continue;
    file.addEventListener("change", () => { if (file.files.length) radios.forEach((r) => (r.checked = false)); });
    radios.forEach((r) => r.addEventListener("change", () => { if (r.checked) file.value = ""; }));
  }
  const form = document.getElementById("job-form");
  // The size box's "auto" says what it means now: the chosen preset's size, else the server's default.
  const size = document.getElementById("f-size");
  const preset = document.getElementById("f-preset");
  if (form && size && preset) {
    const sizes = JSON.parse(form.dataset.presetSizes || "{}");
    const auto = size.querySelector('option[value=""]');
    const showAuto = () => {
      const px = sizes[preset.value];
      if (auto) auto.textContent = px ? `auto (${px} px, the preset's)` : `auto (${form.dataset.defaultSize} px)`;
    };
    preset.addEventListener("change", showAuto);
    showAuto();
  }
  if (form) form.addEventListener("submit", () => {
    const b = document.getElementById("submit");
    b.disabled = true; b.textContent = "Uploading…";
  });
})();

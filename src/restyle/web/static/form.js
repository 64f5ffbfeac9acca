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
  if (form) form.addEventListener("submit", () => {
    const b = document.getElementById("submit");
    b.disabled = true; b.textContent = "Uploading…";
  });
})();

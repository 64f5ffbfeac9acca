// The job page: follow the server-sent progress stream, repaint the preview, reload at the end.
(function () {
  const root = document.getElementById("job");
  if (!root) return;
  const id = root.dataset.id;
  const bar = document.getElementById("bar");
  const detail = document.getElementById("detail");
  const badge = document.getElementById("state");
  const picture = document.getElementById("picture");
  const initial = JSON.parse(root.dataset.initial || "{}");
  if (["done", "failed", "cancelled"].includes(initial.state)) return;
  let preview = initial.preview || 0;
  // A form of this page on its way (Cancel, Share): its answer is the page to show. A reload at the
  // job's end would abort that navigation (a queued job is cancelled at once, its end streamed at once).
  let leaving = false;
  document.addEventListener("submit", () => { leaving = true; });

  function seconds(s) {
    if (!isFinite(s)) return "";
    if (s < 60) return Math.max(1, Math.round(s)) + " s";
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  function render(st) {
    badge.textContent = st.state;
    badge.className = "badge " + st.state;
    const p = st.progress || {};
    if (st.state === "queued") {
      // p.notice: why nothing runs (serve --ray: the cluster does not answer).
      detail.textContent = "Waiting: " + st.ahead + (st.ahead === 1 ? " job" : " jobs") + " ahead." +
        (p.notice ? " " + p.notice + "." : "");
    } else if (st.state === "running" && p.steps && p.unit) {
      // A training (steps) or a clip (frames): the count, the loss while training, the time left.
      bar.value = (p.step || 0) / p.steps;
      const loss = p.loss == null ? "" : ` · loss ${Number(p.loss).toExponential(3)}`;
      const eta = p.eta == null ? "estimating time left" : `about ${seconds(p.eta)} left`;
      detail.textContent = `${p.unit} ${p.step || 0} / ${p.steps}${loss} · ${eta}`;
    } else if (st.state === "running" && p.steps) {
      bar.value = p.step / p.steps;
      // The ETA counts pixels x iterations left over every scale (a 512 px step costs ~4 256 px ones).
      const scale = p.scales ? `scale ${p.scale}/${p.scales} (${p.width}×${p.height}) · ` : "";
      const eta = p.eta == null ? "estimating time left" : `about ${seconds(p.eta)} left`;
      detail.textContent = `${scale}iteration ${p.step} / ${p.steps} · loss ${Number(p.loss).toExponential(3)} · ${eta}`;
    } else if (st.state === "running") {
      detail.textContent = p.notice ? p.notice[0].toUpperCase() + p.notice.slice(1) + "…" : "Starting…";
    }
    if (st.preview && st.preview !== preview) {
      preview = st.preview;
      const img = new Image();
      img.onload = () => { picture.src = img.src; picture.classList.remove("faded"); };
      img.src = `/jobs/${id}/preview.jpg?v=${preview}`;
    }
  }
  function end(st) {
    render(st);
    if (st.state === "done") bar.value = 1;
    if (!leaving) window.location.reload();
  }
  // Without a stream (refused: too many open from this address), ask every few seconds instead.
  function poll() {
    fetch(`/api/jobs/${id}`).then((r) => r.json()).then((st) => {
      if (["done", "failed", "cancelled"].includes(st.state)) end(st);
      else { render(st); setTimeout(poll, 3000); }
    }).catch(() => setTimeout(poll, 10000));
  }
  const es = new EventSource(`/api/jobs/${id}/events`);
  es.addEventListener("progress", (e) => render(JSON.parse(e.data)));
  es.addEventListener("end", (e) => { es.close(); end(JSON.parse(e.data)); });
  es.addEventListener("error", () => { if (es.readyState === EventSource.CLOSED) poll(); });
})();

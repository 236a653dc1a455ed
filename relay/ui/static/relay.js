// relay's dashboard: the only script it runs (CSP script-src 'self'). The pages work without it; it keeps
// relative times fresh and asks before a button that cannot be undone.
"use strict";

function ago(at, now) {
  const delta = (now - at) / 1000;
  const span = Math.abs(delta);
  if (span < 45) return delta >= 0 ? "just now" : "in a moment";
  const units = [[86400, "days"], [3600, "h"], [60, "min"]];
  for (const [size, unit] of units) {
    if (span >= size || unit === "min") {
      const count = Math.max(1, Math.round(span / size));
      const label = unit === "days" && count === 1 ? "day" : unit;
      return delta >= 0 ? `${count} ${label} ago` : `in ${count} ${label}`;
    }
  }
  return "";
}

function refreshTimes() {
  const now = Date.now();
  for (const node of document.querySelectorAll("time[datetime]")) {
    const at = Date.parse(node.getAttribute("datetime"));
    if (!Number.isNaN(at)) node.textContent = ago(at, now);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setInterval(refreshTimes, 30000);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const picker = document.getElementById("tenant-picker");
  if (picker) picker.addEventListener("change", () => picker.form.requestSubmit());
});

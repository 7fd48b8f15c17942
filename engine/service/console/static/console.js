// Live pages: each element with data-live="URL" is refreshed from URL every
// PERIOD_MS. Its children are matched by id and a child is replaced only when
// the server's HTML for it changed, so a form being filled in, a details box
// opened or a video playing survives every refresh that does not concern it.
"use strict";

const PERIOD_MS = 1000;

function htmlById(parent) {
  return new Map([...parent.children].map((child) => [child.id, child.outerHTML]));
}

function reconcile(region, fresh, known) {
  const current = new Map([...region.children].map((child) => [child.id, child]));
  const wanted = [...fresh.children].map((node) => {
    const kept = current.get(node.id);
    return kept && node.id && known.get(node.id) === node.outerHTML ? kept : node;
  });
  const keep = new Set(wanted);
  for (const child of [...region.children]) {
    if (!keep.has(child)) child.remove();
  }
  wanted.forEach((node, index) => {
    const here = region.children[index] ?? null;
    if (here !== node) region.insertBefore(node, here);
  });
}

async function refresh(region, known) {
  const response = await fetch(region.dataset.live, {
    credentials: "same-origin",
    headers: { Accept: "text/html" },
  });
  if (!response.ok) throw new Error(`${response.status} from ${region.dataset.live}`);
  const template = document.createElement("template");
  template.innerHTML = await response.text();
  const next = htmlById(template.content);
  reconcile(region, template.content, known);
  return next;
}

function live(region) {
  let known = htmlById(region);
  const tick = async () => {
    if (!document.hidden) {
      try {
        known = await refresh(region, known);
        document.body.classList.remove("offline");
      } catch {
        document.body.classList.add("offline");
      }
    }
    setTimeout(tick, PERIOD_MS);
  };
  setTimeout(tick, PERIOD_MS);
}

// One click sends one approval: a second submit of the same form is dropped.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.dataset.sending) event.preventDefault();
  else form.dataset.sending = "yes";
});

document.querySelectorAll("[data-live]").forEach(live);

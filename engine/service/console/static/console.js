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

// The runs ticked for a bulk action stay ticked when the live table is replaced, and
// the header's box (shown only with this script) ticks every run of the page.
const ticked = new Set();
const runBoxes = () => document.querySelectorAll('input[form="bulk"][name="run_id"]');

function showTicks() {
  const boxes = [...runBoxes()];
  boxes.forEach((box) => { box.checked = ticked.has(box.value); });
  document.querySelectorAll("input[data-tick-all]").forEach((all) => {
    all.hidden = false;
    all.checked = boxes.length > 0 && boxes.every((box) => box.checked);
  });
}

document.addEventListener("change", (event) => {
  const box = event.target;
  if (box.matches('input[form="bulk"][name="run_id"]')) {
    if (box.checked) ticked.add(box.value);
    else ticked.delete(box.value);
  } else if (box.matches("input[data-tick-all]")) {
    runBoxes().forEach((one) => {
      if (box.checked) ticked.add(one.value);
      else ticked.delete(one.value);
    });
  } else {
    return;
  }
  showTicks();
});

if (document.getElementById("bulk")) {
  new MutationObserver(showTicks).observe(document.body, { childList: true, subtree: true });
  showTicks();
}

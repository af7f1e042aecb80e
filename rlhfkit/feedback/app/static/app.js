/* rlhfkit feedback: keyboard shortcuts for the judging forms.
 *
 * Progressive enhancement only: every form works without this file (radio buttons, number inputs,
 * a submit button). The shortcuts are listed on the page itself (the "Keyboard" panel), so keep
 * that list (templates/_keys.html) in step with the handlers below. One document-level listener is
 * used so forms swapped in by htmx need no re-binding.
 */
(function () {
  "use strict";

  function judgeForm() { return document.querySelector("form.judge"); }

  function typingInText(el) {
    if (!el) return false;
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    return el.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(el.type);
  }

  function submit(form) {
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
  }

  /* ---- rating: digits score the active response, then the next unrated one becomes active ---- */
  function ratingBlocks(form) { return Array.from(form.querySelectorAll(".response")); }

  function setActive(form, index) {
    const blocks = ratingBlocks(form);
    if (!blocks.length) return;
    index = Math.max(0, Math.min(blocks.length - 1, index));
    blocks.forEach(function (b, i) { b.classList.toggle("active", i === index); });
    form.dataset.active = String(index);
    blocks[index].scrollIntoView({ block: "nearest" });
    const checked = blocks[index].querySelector("input:checked") || blocks[index].querySelector("input[type=radio]");
    if (checked) checked.focus({ preventScroll: true });
  }

  function activeIndex(form) {
    const focused = document.activeElement && document.activeElement.closest(".response");
    const blocks = ratingBlocks(form);
    if (focused && blocks.includes(focused)) return blocks.indexOf(focused);
    return Number(form.dataset.active || 0);
  }

  function rate(form, key) {
    const blocks = ratingBlocks(form);
    const i = activeIndex(form);
    const radio = blocks[i] && blocks[i].querySelector('input[type=radio][value="' + key + '"]');
    if (!radio) return false;
    radio.checked = true;
    const next = blocks.findIndex(function (b, j) { return j > i && !b.querySelector("input:checked"); });
    setActive(form, next >= 0 ? next : i);
    return true;
  }

  /* ---- pair: 1/left, 2/right, 0 or t tie; z/x/c strength ---- */
  const PAIR_KEYS = { "1": "left", "ArrowLeft": "left", "2": "right", "ArrowRight": "right", "0": "tie", "t": "tie" };
  const STRENGTH_KEYS = { "z": "1", "x": "2", "c": "3" };

  function check(form, name, value) {
    const radio = form.querySelector('input[name="' + name + '"][value="' + value + '"]');
    if (!radio) return false;
    radio.checked = true;
    radio.focus({ preventScroll: true });
    return true;
  }

  /* ---- ranking: j/k move focus, u/d (or Alt+arrows) move the item, digits put it at a position ---- */
  function rankItems(form) { return Array.from(form.querySelectorAll(".ranking > li")); }

  function renumber(form) {
    rankItems(form).forEach(function (li, i) {
      li.querySelector("input[type=number]").value = String(i + 1);
      li.querySelector(".position").textContent = String(i + 1);
    });
  }

  function moveItem(form, li, to) {
    const items = rankItems(form);
    const from = items.indexOf(li);
    to = Math.max(0, Math.min(items.length - 1, to));
    if (from < 0) return;
    if (to !== from) {
      const list = li.parentElement;
      list.removeChild(li);
      const rest = rankItems(form);
      list.insertBefore(li, rest[to] || null);
    }
    renumber(form);
    li.focus();
    const status = form.querySelector(".rank-status");
    if (status) status.textContent = "Moved to position " + (to + 1) + " of " + items.length + ".";
  }

  function focusedItem(form) {
    const el = document.activeElement;
    const li = el && el.closest(".ranking > li");
    return li && form.contains(li) ? li : null;
  }

  function rankKey(form, event) {
    const items = rankItems(form);
    const li = focusedItem(form) || items[0];
    if (!li) return false;
    const i = items.indexOf(li);
    const key = event.key;
    if (key === "j" || (key === "ArrowDown" && !event.altKey)) { (items[i + 1] || li).focus(); return true; }
    if (key === "k" || (key === "ArrowUp" && !event.altKey)) { (items[i - 1] || li).focus(); return true; }
    if (key === "d" || (key === "ArrowDown" && event.altKey)) { moveItem(form, li, i + 1); return true; }
    if (key === "u" || (key === "ArrowUp" && event.altKey)) { moveItem(form, li, i - 1); return true; }
    if (/^[1-9]$/.test(key) && Number(key) <= items.length) { moveItem(form, li, Number(key) - 1); return true; }
    return false;
  }

  function enhanceRanking(form) {
    rankItems(form).forEach(function (li) {
      li.querySelectorAll(".moves button").forEach(function (b) { b.hidden = false; });
    });
  }

  /* ---- wiring ---- */
  function toggleHelp() {
    const keys = document.getElementById("keys");
    if (!keys) return;
    if (keys.tagName === "DETAILS") keys.open = !keys.open;
    keys.focus();
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.defaultPrevented) return;
    const target = event.target;
    // Enter in the discard reason discards (the browser's implicit submission would press Submit instead)
    if (event.key === "Enter" && target.matches && target.matches(".discard-box input[name=reason]")) {
      const discard = target.closest(".discard-box").querySelector('button[value="discard"]');
      if (discard) { event.preventDefault(); discard.click(); }
      return;
    }
    if (event.key === "?" && !typingInText(target)) { toggleHelp(); event.preventDefault(); return; }
    const form = judgeForm();
    if (!form) return;
    const kind = form.dataset.kind;
    const inRankNumber = kind === "ranking" && target.matches && target.matches(".ranking input[type=number]");
    if (typingInText(target) && !inRankNumber) return;
    if (event.key === "Enter") {
      if (target.tagName === "BUTTON" || target.tagName === "A") return;  // let them do their own thing
      event.preventDefault();
      submit(form);
      return;
    }
    if (inRankNumber) return;  // digits type into the box; Enter (above) submits
    let handled = false;
    if (event.altKey && kind !== "ranking") return;
    if (kind === "rating") {
      if (/^[0-9]$/.test(event.key)) handled = rate(form, event.key);
      else if (event.key === "j" || event.key === "ArrowDown") { setActive(form, activeIndex(form) + 1); handled = true; }
      else if (event.key === "k" || event.key === "ArrowUp") { setActive(form, activeIndex(form) - 1); handled = true; }
    } else if (kind === "pair") {
      if (PAIR_KEYS[event.key]) handled = check(form, "winner", PAIR_KEYS[event.key]);
      else if (STRENGTH_KEYS[event.key]) handled = check(form, "strength", STRENGTH_KEYS[event.key]);
    } else if (kind === "ranking") {
      handled = rankKey(form, event);
    }
    if (handled) event.preventDefault();
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest && event.target.closest(".moves button[data-move]");
    if (button) {
      const form = button.closest("form.judge");
      const li = button.closest("li");
      const i = rankItems(form).indexOf(li);
      moveItem(form, li, i + Number(button.dataset.move));
      return;
    }
    const block = event.target.closest && event.target.closest("form.judge .response");
    if (block) {
      const form = block.closest("form.judge");
      ratingBlocks(form).forEach(function (b) { b.classList.toggle("active", b === block); });
      form.dataset.active = String(ratingBlocks(form).indexOf(block));
    }
  });

  function ready(root) {
    const form = judgeForm();
    if (!form || (root && !root.contains(form))) return;
    if (form.dataset.kind === "ranking") enhanceRanking(form);
    if (form.dataset.kind === "rating") {
      const blocks = ratingBlocks(form);
      const first = blocks.findIndex(function (b) { return !b.querySelector("input:checked"); });
      setActive(form, first >= 0 ? first : 0);
    } else {
      const first = form.querySelector(".ranking > li, input[type=radio]:checked, input[type=radio]");
      if (first) first.focus({ preventScroll: true });
    }
  }

  document.addEventListener("DOMContentLoaded", function () { ready(null); });
  document.addEventListener("htmx:afterSwap", function (event) { ready(event.detail.target); });
})();

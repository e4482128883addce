// The account page: who is signed in, their factors, adding and removing them, recovery codes.

import { ApiError, authed, logout, resume, setAccessToken, withSessionLock } from "./api.js";
import { enrollApp, enrollKey } from "./enroll.js";
import { secondFactor } from "./second-factor.js";
import { Alerts, TYPE_NAMES, busy, field, focus, formatTime, h, messageFor } from "./ui.js";
import { KeyError } from "./webauthn.js";

const $ = (id) => document.getElementById(id);
const alerts = new Alerts($("alert"));
const status = $("status");
const list = $("factors");
const enrollArea = $("enroll-area");
const addApp = $("add-app");
const addKey = $("add-key");
const label = $("new-label");
const codesArea = $("codes");
const dialog = $("step-up");
const dialogAlerts = new Alerts($("step-up-alert"));
const CANCELLED = Symbol("cancelled");

function say(message) {
  status.textContent = message;
}

function fail(e) {
  if (e instanceof ApiError && e.error === "invalid_grant") {
    // The session is over (logged out elsewhere, expired, revoked): back to the login.
    location.replace("/");
    return;
  }
  alerts.show(e instanceof KeyError ? e.message : messageFor(e));
}

// Run an action; if the service wants a recent second factor first, ask for one and run the
// action again. Resolves CANCELLED when the person cancels the step-up.
async function withStepUp(action) {
  try {
    return await action();
  } catch (e) {
    if (!(e instanceof ApiError && e.error === "step_up_required")) throw e;
  }
  if (!(await stepUp())) return CANCELLED;
  return action();
}

async function stepUp() {
  const start = await authed("POST", "/api/step-up");
  const body = $("step-up-body");
  dialogAlerts.clear();
  let cancel;
  const cancelled = new Promise((resolve) => {
    cancel = () => resolve(null);
  });
  $("step-up-cancel").onclick = cancel;
  dialog.oncancel = cancel; // Escape
  dialog.showModal();
  try {
    const tokens = await Promise.race([
      secondFactor(body, {
        mfaToken: start.mfa_token,
        factors: start.factors,
        alerts: dialogAlerts,
        cookie: true,
        // The new refresh token replaces the cookie: no other tab may refresh meanwhile.
        verifyWrap: withSessionLock,
      }),
      cancelled,
    ]);
    if (!tokens) return false;
    setAccessToken(tokens.access_token);
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.error === "invalid_mfa_token") {
      alerts.show("The confirmation took too long and has expired. Try again.");
      return false;
    }
    throw e;
  } finally {
    dialog.close();
    body.replaceChildren();
  }
}

function renderFactors(factors) {
  const shown = factors.filter((f) => f.type !== "recovery");
  list.replaceChildren(
    ...(shown.length ? shown.map((f) => item(f, factors)) : [h("li", { class: "empty" }, "No second factor yet.")]),
  );
  const recovery = factors.find((f) => f.type === "recovery");
  $("recovery-state").textContent = recovery
    ? `You have ${recovery.remaining ?? "some"} unused recovery code${recovery.remaining === 1 ? "" : "s"}. New codes replace them.`
    : "You have no recovery codes.";
}

function item(factor, all) {
  const title = h("h3", {}, factor.label);
  const details = h(
    "dl",
    { class: "details" },
    h("dt", {}, "Type"),
    h("dd", {}, TYPE_NAMES[factor.type] ?? factor.type),
    factor.status !== "active" ? [h("dt", {}, "Status"), h("dd", {}, factor.status)] : [],
    h("dt", {}, "Last used"),
    h("dd", {}, formatTime(factor.last_used_at)),
  );
  const actions = h("div", { class: "actions" });
  const li = h("li", { class: "factor" }, title, details, actions);

  const buttons = () => {
    actions.replaceChildren(
      h("button", { type: "button", class: "secondary", "aria-label": `Rename ${factor.label}`, onclick: rename }, "Rename"),
      h("button", { type: "button", class: "danger", "aria-label": `Remove ${factor.label}`, onclick: confirmRemove }, "Remove"),
    );
  };

  function rename() {
    const name = field("New name", { value: factor.label, maxlength: "64", required: true });
    const save = h("button", { type: "submit" }, "Save");
    const form = h(
      "form",
      {
        class: "inline",
        onsubmit: async (event) => {
          event.preventDefault();
          alerts.clear();
          try {
            await busy(save, () => authed("PATCH", `/api/factors/${encodeURIComponent(factor.id)}`, { label: name.input.value }));
            say(`Renamed to ${name.input.value.trim()}.`);
            await refresh();
          } catch (e) {
            fail(e);
          }
        },
      },
      name.field,
      h("div", { class: "actions" }, save, h("button", { type: "button", class: "secondary", onclick: () => { buttons(); focus(title); } }, "Cancel")),
    );
    actions.replaceChildren(form);
    name.input.select();
    focus(name.input);
  }

  function confirmRemove() {
    const others = all.filter((f) => f.id !== factor.id && f.status === "active" && f.type !== "recovery");
    const warning =
      factor.status === "active" && others.length === 0
        ? " It is your only second factor: you will set up a new one at your next login."
        : "";
    const yes = h("button", { type: "button", class: "danger" }, "Yes, remove");
    const no = h("button", { type: "button", class: "secondary", onclick: () => { buttons(); focus(title); } }, "Keep it");
    yes.addEventListener("click", async () => {
      alerts.clear();
      try {
        const done = await busy(yes, () =>
          withStepUp(() => authed("DELETE", `/api/factors/${encodeURIComponent(factor.id)}`)),
        );
        if (done === CANCELLED) {
          buttons();
          return;
        }
        say(`Removed ${factor.label}.`);
        await refresh();
        focus($("factors-heading"));
      } catch (e) {
        fail(e);
      }
    });
    actions.replaceChildren(h("p", { class: "confirm" }, `Remove ${factor.label}?${warning}`), yes, no);
    focus(no);
  }

  buttons();
  return li;
}

async function refresh() {
  const factors = await authed("GET", "/api/factors");
  renderFactors(factors);
}

function startEnroll(button, run) {
  button.addEventListener("click", async () => {
    alerts.clear();
    addApp.disabled = true;
    addKey.disabled = true;
    try {
      const factor = await run();
      if (factor) {
        label.value = "";
        say(`${factor.label} added.`);
        await refresh();
        focus($("factors-heading"));
      }
    } catch (e) {
      fail(e);
    } finally {
      addApp.disabled = false;
      addKey.disabled = false;
    }
  });
}

const discard = (id) => authed("DELETE", `/api/factors/${encodeURIComponent(id)}`);
startEnroll(addApp, () => enrollApp(enrollArea, { request: authed, alerts, label: label.value.trim(), discard }));
startEnroll(addKey, () => enrollKey(enrollArea, { request: authed, label: label.value.trim(), discard }));

function showCodes(codes) {
  const text = `${codes.join("\n")}\n`;
  const copy = h("button", { type: "button", class: "secondary" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      say("Recovery codes copied.");
    } catch {
      alerts.show("Copying did not work here: select the codes and copy them yourself.");
    }
  });
  const download = h("button", { type: "button", class: "secondary" }, "Download");
  download.addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    const link = h("a", { href: url, download: "recovery-codes.txt" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  const heading = h("h3", {}, "Your new recovery codes");
  const done = h("button", { type: "button", onclick: () => { codesArea.replaceChildren(); focus($("recovery-heading")); } }, "I have saved them");
  codesArea.replaceChildren(
    heading,
    h("p", {}, "Save them somewhere safe now: they are shown only this once, and each works once."),
    h("ol", { class: "codes" }, codes.map((c) => h("li", {}, h("code", {}, c)))),
    h("div", { class: "actions" }, copy, download, done),
  );
  focus(heading);
}

$("generate-codes").addEventListener("click", async (event) => {
  alerts.clear();
  try {
    const result = await busy(event.currentTarget, () => withStepUp(() => authed("POST", "/api/recovery-codes")));
    if (result === CANCELLED) return;
    showCodes(result.codes);
    await refresh();
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) alerts.show("Recovery codes are not available on this service.");
    else fail(e);
  }
});

$("logout").addEventListener("click", async (event) => {
  try {
    await busy(event.currentTarget, logout);
  } catch {
    // Whatever the service said, this page forgets the session.
  }
  location.replace("/");
});

async function boot() {
  try {
    await resume();
  } catch {
    location.replace("/");
    return;
  }
  try {
    const me = await authed("GET", "/api/me");
    $("username").textContent = me.username;
    renderFactors(me.factors);
    $("loading").hidden = true;
    $("content").hidden = false;
  } catch (e) {
    $("loading").hidden = true;
    fail(e);
  }
}

boot();

// After the password: enroll a first factor (enroll_required) or answer a second factor, then
// go to the account page, which picks the session up from the cookie set by this last step.

import { ApiError, call } from "./api.js";
import { enrollApp, enrollKey } from "./enroll.js";
import { secondFactor } from "./second-factor.js";
import { focus, h, messageFor } from "./ui.js";

export const ACCOUNT = "/account";

// `start` is the answer of POST /api/login; `onEnded(error)` brings back the password form.
export async function afterPassword(container, start, { alerts, onEnded }) {
  try {
    if (start.enroll_required) await enrollFirst(container, start, alerts);
    else await answer(container, start, alerts);
    location.assign(ACCOUNT);
  } catch (e) {
    onEnded(e);
  }
}

async function answer(container, start, alerts) {
  const heading = h("h2", {}, "Second factor");
  const body = h("div");
  container.replaceChildren(heading, body);
  await secondFactor(body, { mfaToken: start.mfa_token, factors: start.factors, alerts, cookie: true });
}

function enrollFirst(container, start, alerts) {
  const request = (method, path, body) => call(method, path, body, { token: start.mfa_token });
  return new Promise((resolve, reject) => {
    const area = h("div", { class: "enroll-area" });
    const appButton = h("button", { type: "button" }, "Add authenticator app");
    const keyButton = h("button", { type: "button", class: "secondary" }, "Add security key");
    const choices = h("div", { class: "actions" }, appButton, keyButton);
    const heading = h("h2", {}, "Set up a second factor");
    container.replaceChildren(
      heading,
      h("p", {}, "Your account needs a second factor before you can sign in: an authenticator app on your phone, or a security key."),
      choices,
      area,
    );
    focus(heading);

    const failed = (e) => {
      if (e instanceof ApiError && ["invalid_mfa_token", "unauthorized"].includes(e.error)) reject(e);
      else alerts.show(e instanceof ApiError ? messageFor(e) : e.message);
    };
    // The choices hide while an app is being set up, so one click makes one pending factor;
    // its Cancel brings them back.
    appButton.addEventListener("click", async () => {
      alerts.clear();
      choices.hidden = true;
      try {
        const result = await enrollApp(area, { request, alerts, cookie: true });
        if (result) {
          resolve(result);
          return;
        }
        choices.hidden = false;
        focus(appButton);
      } catch (e) {
        choices.hidden = false;
        failed(e);
      }
    });
    keyButton.addEventListener("click", async () => {
      alerts.clear();
      keyButton.disabled = true;
      try {
        resolve(await enrollKey(area, { request, cookie: true }));
      } catch (e) {
        failed(e);
      } finally {
        keyButton.disabled = false;
      }
    });
  });
}

// The password form's answer to an ended login: a message, and the form again.
export function endedMessage(e) {
  if (e instanceof ApiError && ["invalid_mfa_token", "unauthorized"].includes(e.error)) {
    return "This login has expired or ended. Please log in again.";
  }
  return e instanceof ApiError ? messageFor(e) : e.message;
}

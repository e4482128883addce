// Enrolling a factor: an authenticator app by its QR code, or a security key.
//
// `request(method, path, body)` is the caller's way to the API: with the login's mfa_token
// while a first factor is enrolled at login, with the access token on the account page.
// Both resolve with the confirmed factor (plus the tokens, when it finished a login), or with
// null when the person cancels. `discard(id)` removes an abandoned pending factor, if it can.

import { ApiError } from "./api.js";
import { busy, field, focus, h, holdFor, messageFor } from "./ui.js";
import * as webauthn from "./webauthn.js";

// The login (or session) is gone: nothing on this panel can succeed any more.
const ENDED = ["invalid_mfa_token", "unauthorized", "invalid_grant"];

// The base32 key in groups of four, easier to type; authenticator apps ignore the spaces.
function grouped(secret) {
  return secret.match(/.{1,4}/g).join(" ");
}

export async function enrollApp(container, { request, alerts, label, cookie = false, discard }) {
  const factor = await request("POST", "/api/factors", { type: "totp", label: label || "Authenticator app" });
  return new Promise((resolve, reject) => {
    const heading = h("h3", {}, "Scan the QR code with your authenticator app");
    const code = field("Code", {
      name: "code",
      inputmode: "numeric",
      autocomplete: "one-time-code",
      required: true,
      maxlength: "12",
      spellcheck: "false",
    });
    const verify = h("button", { type: "submit" }, "Verify");
    const cancel = h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: async () => {
          container.replaceChildren();
          if (discard) await discard(factor.id).catch(() => {});
          resolve(null);
        },
      },
      "Cancel",
    );
    const form = h(
      "form",
      {
        onsubmit: async (event) => {
          event.preventDefault();
          alerts.clear();
          const value = code.input.value.replace(/\s+/g, "");
          try {
            const result = await busy(verify, () =>
              request("POST", `/api/factors/${encodeURIComponent(factor.id)}/confirm`, { code: value, cookie }),
            );
            container.replaceChildren();
            resolve(result);
          } catch (e) {
            if (e instanceof ApiError && ENDED.includes(e.error)) {
              reject(e);
              return;
            }
            alerts.show(messageFor(e, "totp"));
            if (e instanceof ApiError && e.error === "too_many_attempts") holdFor(verify, e.retryAfter);
            code.input.select();
          }
        },
      },
      code.field,
      h("div", { class: "actions" }, verify, cancel),
    );
    container.replaceChildren(
      h(
        "div",
        { class: "enroll" },
        heading,
        h(
          "div",
          { class: "qr-pair" },
          h("img", { class: "qr", alt: "QR code", src: `data:image/png;base64,${factor.qr_png}` }),
          h(
            "p",
            { class: "secret" },
            "Cannot scan it? Type this key into the app instead: ",
            h("code", { class: "secret-key" }, grouped(factor.secret)),
          ),
        ),
        h("p", {}, "Then enter the 6-digit code the app shows."),
        form,
      ),
    );
    focus(heading);
  });
}

// Throws a KeyError (webauthn.js) or an ApiError for the caller to show.
export async function enrollKey(container, { request, label, cookie = false, discard }) {
  let factor;
  try {
    factor = await request("POST", "/api/factors", { type: "webauthn", label: label || "Security key" });
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) {
      throw new ApiError(400, "unsupported", "This service does not offer security keys.");
    }
    throw e;
  }
  const note = h("p", { class: "hint", role: "status" }, "Insert your security key and touch it when it blinks.");
  container.replaceChildren(note);
  let credential;
  try {
    credential = await webauthn.create(factor.publicKey);
  } catch (e) {
    container.replaceChildren();
    if (discard) await discard(factor.id).catch(() => {});
    throw e;
  }
  try {
    return await request("POST", `/api/factors/${encodeURIComponent(factor.id)}/confirm`, { credential, cookie });
  } catch (e) {
    if (discard) await discard(factor.id).catch(() => {});
    if (e instanceof ApiError && e.error === "verification_failed") {
      throw new ApiError(e.status, e.error, messageFor(e, "webauthn"));
    }
    throw e;
  } finally {
    container.replaceChildren();
  }
}

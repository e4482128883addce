// The sign-up page: create the account, log straight in, and enroll the first factor.

import { call } from "./api.js";
import { afterPassword, endedMessage } from "./login-flow.js";
import { Alerts, busy, focus, messageFor } from "./ui.js";

const alerts = new Alerts(document.getElementById("alert"));
const step = document.getElementById("step");
const form = document.getElementById("signup-form");
const username = document.getElementById("username");
const password = document.getElementById("password");
const submit = form.querySelector("button[type=submit]");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  alerts.clear();
  const credentials = { username: username.value, password: password.value };
  let created = false;
  let start;
  try {
    start = await busy(submit, async () => {
      await call("POST", "/api/users", credentials);
      created = true;
      return call("POST", "/api/login", credentials);
    });
  } catch (e) {
    if (created) {
      alerts.show(`${messageFor(e)} Your account was created: log in to continue.`);
      step.replaceChildren();
      return;
    }
    alerts.show(messageFor(e));
    focus(e.error === "username_taken" ? username : password);
    return;
  }
  password.value = "";
  afterPassword(step, start, {
    alerts,
    // The account exists now: an ended login continues on the login page.
    onEnded: (e) => {
      alerts.show(`${endedMessage(e)} Your account was created: log in to continue.`);
      step.replaceChildren();
    },
  });
});

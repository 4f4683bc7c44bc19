/*
 * forms.js: small behaviours of plain forms, without inline handlers (the Content-Security-Policy
 * allows no inline script).
 *
 * - `<select data-autosubmit>` submits its form when its value changes.
 */
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target instanceof HTMLSelectElement && target.hasAttribute("data-autosubmit") && target.form) {
      target.form.requestSubmit ? target.form.requestSubmit() : target.form.submit();
    }
  });
})();

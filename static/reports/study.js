// Study set-up form: show the fields that belong to the chosen question type.
(function () {
  document.querySelectorAll(".study-form").forEach(function (form) {
    var type = form.querySelector("[name=question_type]");
    if (!type) return;
    function sync() {
      form.querySelectorAll("[data-show-for]").forEach(function (el) {
        el.style.display = el.getAttribute("data-show-for") === type.value ? "" : "none";
      });
    }
    type.addEventListener("change", sync);
    sync();
  });
})();

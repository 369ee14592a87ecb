// Draw each ROC figure (built server-side) with the bundled plotly.js.
(function () {
  if (!window.Plotly) return;
  document.querySelectorAll(".roc-chart[data-figure]").forEach(function (div) {
    var src = document.getElementById(div.getAttribute("data-figure"));
    if (!src) return;
    var fig = JSON.parse(src.textContent);
    Plotly.newPlot(div, fig.data, fig.layout, {
      responsive: true, displaylogo: false,
      toImageButtonOptions: { format: "png", filename: div.id, scale: 2 },
    });
  });
})();

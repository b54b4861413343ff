// The usage chart: requests per day stacked by status class, drawn with uPlot from the page's JSON data block.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var holder = document.getElementById("usage-chart");
  var source = document.getElementById("usage-data");
  if (!holder || !source || !window.uPlot) {
    return;
  }
  var data = JSON.parse(source.textContent);
  var classes = ["2xx", "3xx", "4xx", "5xx"];
  var colours = { "2xx": "#1a7f37", "3xx": "#0a58ca", "4xx": "#9a6700", "5xx": "#b02a37" };
  // Stacked bars: each class is drawn as the running total up to it, tallest first, so each shorter bar paints
  // over the one behind and the visible band of each colour is that class's count.
  var running = data.days.map(function () { return 0; });
  var stacked = {};
  classes.forEach(function (name) {
    running = running.map(function (sum, i) { return sum + data[name][i]; });
    stacked[name] = running.slice();
  });
  var order = classes.slice().reverse();
  var bars = uPlot.paths.bars({ size: [0.7, 60] });
  var series = [{}].concat(order.map(function (name) {
    return {
      label: name,
      fill: colours[name],
      stroke: colours[name],
      paths: bars,
      points: { show: false },
      value: function (u, v, si, i) { return i == null ? "" : String(data[name][i]); },
    };
  }));
  var width = Math.max(holder.clientWidth, 320);
  new uPlot({
    width: width,
    height: 260,
    series: series,
    scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(max, 1)]; } } },
    axes: [{}, { label: "requests" }],
  }, [data.days].concat(order.map(function (name) { return stacked[name]; })), holder);
});

/* fairbench report: sort any table.sortable by a column, from file://, no libraries.
   Select a column header to sort (numbers descending first, text ascending first; again to reverse); rows whose
   cell has no value (n/a) stay last. A URL fragment #sort=TABLE:KEY,DIR (DIR asc or desc) sorts on load, e.g.
   task.html#sort=utility:auc,asc. The sorted table records data-sorted="KEY,DIR". */
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var v = cell ? cell.getAttribute("data-v") : null;
    if (v === null || v === "") { return null; }
    if (!numeric) { return v; }
    var x = parseFloat(v);
    return isNaN(x) ? null : x;
  }

  function sortTable(table, index, dir) {
    var head = table.tHead.rows[0];
    var th = head.cells[index];
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var order = new Map();
    rows.forEach(function (r, k) { order.set(r, k); });
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (x === null || y === null) {
        if (x === y) { return order.get(a) - order.get(b); }
        return x === null ? 1 : -1;
      }
      var c = numeric ? x - y : String(x).localeCompare(String(y), undefined, {numeric: true});
      if (c === 0) { return order.get(a) - order.get(b); }
      return dir === "desc" ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(head.cells, function (h) { h.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", dir === "desc" ? "descending" : "ascending");
    table.setAttribute("data-sorted", th.getAttribute("data-key") + "," + dir);
  }

  function columnIndex(table, key) {
    var cells = table.tHead.rows[0].cells;
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].getAttribute("data-key") === key) { return i; }
    }
    return -1;
  }

  function setUp(table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      var button = th.querySelector("button");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var now = th.getAttribute("aria-sort");
        var first = th.getAttribute("data-type") === "num" ? "desc" : "asc";
        var dir = now === "ascending" ? "desc" : now === "descending" ? "asc" : first;
        sortTable(table, index, dir);
      });
    });
  }

  function fromFragment() {
    var m = /(?:^#|&)sort=([^&]+)/.exec(window.location.hash);
    if (!m) { return; }
    var spec = decodeURIComponent(m[1]);
    var colon = spec.indexOf(":"), comma = spec.lastIndexOf(",");
    if (colon < 0) { return; }
    var table = document.getElementById(spec.slice(0, colon));
    var key = comma > colon ? spec.slice(colon + 1, comma) : spec.slice(colon + 1);
    var dir = comma > colon && spec.slice(comma + 1) === "desc" ? "desc" : "asc";
    if (!table || !table.classList.contains("sortable")) { return; }
    var index = columnIndex(table, key);
    if (index >= 0) { sortTable(table, index, dir); }
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), setUp);
    fromFragment();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
  window.addEventListener("hashchange", fromFragment);
}());

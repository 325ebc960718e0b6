"use strict";
// Vehicle positions drawn in SVG by hand (no map library: nothing is fetched from
// outside but the configured tile server's images). Without a tile server the markers
// stand on a plain longitude/latitude grid, so the map works offline.
var hqMap = (function () {
  var NS = "http://www.w3.org/2000/svg";
  var W = 640, H = 400, TILE = 256, MARGIN = 48;

  function node(tag, attrs, text) {
    var n = document.createElementNS(NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { n.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { n.textContent = String(text); }
    return n;
  }

  function located(vehicles) {
    return vehicles.filter(function (v) {
      var g = v.gps;
      return g && typeof g.lat === "number" && typeof g.lon === "number" &&
        Math.abs(g.lat) <= 85 && Math.abs(g.lon) <= 180;
    });
  }

  // Web Mercator pixels at zoom z.
  function project(lat, lon, z) {
    var scale = TILE * Math.pow(2, z);
    var s = Math.sin(lat * Math.PI / 180);
    return { x: (lon + 180) / 360 * scale,
             y: (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) * scale };
  }

  function marker(svg, v, x, y) {
    var g = node("g", { "class": "marker " + (v.state === "online" ? "online" : "offline"),
                        "data-vehicle": v.vehicle_id, transform: "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")" });
    g.appendChild(node("circle", { r: 7 }));
    g.appendChild(node("text", { x: 10, y: 4 }, v.vehicle_id));
    g.appendChild(node("title", {}, v.vehicle_id + " " + (v.state || "") + " " +
      v.gps.lat.toFixed(5) + ", " + v.gps.lon.toFixed(5)));
    svg.appendChild(g);
  }

  function withTiles(svg, points, template) {
    var z = 17, a, b;
    for (; z > 1; z--) {
      var xs = points.map(function (v) { return project(v.gps.lat, v.gps.lon, z).x; });
      var ys = points.map(function (v) { return project(v.gps.lat, v.gps.lon, z).y; });
      a = { x: Math.min.apply(null, xs), y: Math.min.apply(null, ys) };
      b = { x: Math.max.apply(null, xs), y: Math.max.apply(null, ys) };
      if (b.x - a.x <= W - 2 * MARGIN && b.y - a.y <= H - 2 * MARGIN) { break; }
    }
    if (points.length === 1) { z = Math.min(z, 15); a = b = project(points[0].gps.lat, points[0].gps.lon, z); }
    var left = (a.x + b.x) / 2 - W / 2, top = (a.y + b.y) / 2 - H / 2;
    var count = Math.pow(2, z);
    for (var tx = Math.floor(left / TILE); tx <= Math.floor((left + W) / TILE); tx++) {
      for (var ty = Math.max(0, Math.floor(top / TILE)); ty <= Math.min(count - 1, Math.floor((top + H) / TILE)); ty++) {
        var wrapped = ((tx % count) + count) % count;
        var url = template.replace("{z}", z).replace("{x}", wrapped).replace("{y}", ty);
        svg.appendChild(node("image", { "class": "tile", href: url, x: tx * TILE - left, y: ty * TILE - top,
                                         width: TILE, height: TILE }));
      }
    }
    points.forEach(function (v) {
      var p = project(v.gps.lat, v.gps.lon, z);
      marker(svg, v, p.x - left, p.y - top);
    });
    svg.appendChild(node("text", { "class": "attribution", x: W - 6, y: H - 6, "text-anchor": "end" },
      "tiles: " + template.split("/")[2]));
  }

  function plain(svg, points) {
    var lats = points.map(function (v) { return v.gps.lat; });
    var lons = points.map(function (v) { return v.gps.lon; });
    var midLat = (Math.min.apply(null, lats) + Math.max.apply(null, lats)) / 2;
    var midLon = (Math.min.apply(null, lons) + Math.max.apply(null, lons)) / 2;
    var k = Math.cos(midLat * Math.PI / 180);
    // Degrees of longitude shrink with latitude: east-west spans are scaled by cos(lat).
    var span = Math.max(0.01, (Math.max.apply(null, lats) - Math.min.apply(null, lats)) * 1.2,
                        (Math.max.apply(null, lons) - Math.min.apply(null, lons)) * k * 1.2 * H / W);
    var perDeg = (H - 2 * MARGIN) / span;
    function x(lon) { return W / 2 + (lon - midLon) * k * perDeg; }
    function y(lat) { return H / 2 - (lat - midLat) * perDeg; }
    var step = Math.pow(10, Math.floor(Math.log10(span / 2)));
    for (var lat = Math.floor((midLat - span) / step) * step; lat <= midLat + span; lat += step) {
      if (y(lat) < 0 || y(lat) > H) { continue; }
      svg.appendChild(node("line", { "class": "grid", x1: 0, x2: W, y1: y(lat), y2: y(lat) }));
      svg.appendChild(node("text", { "class": "grid-label", x: 4, y: y(lat) - 3 }, lat.toFixed(3) + "°"));
    }
    var lonSpan = span * W / H / k;
    for (var lon = Math.floor((midLon - lonSpan) / step) * step; lon <= midLon + lonSpan; lon += step) {
      if (x(lon) < 0 || x(lon) > W) { continue; }
      svg.appendChild(node("line", { "class": "grid", y1: 0, y2: H, x1: x(lon), x2: x(lon) }));
      svg.appendChild(node("text", { "class": "grid-label", x: x(lon) + 3, y: H - 4 }, lon.toFixed(3) + "°"));
    }
    points.forEach(function (v) { marker(svg, v, x(v.gps.lon), y(v.gps.lat)); });
  }

  function draw(svg, vehicles, template) {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    svg.appendChild(node("rect", { "class": "sea", x: 0, y: 0, width: W, height: H }));
    var points = located(vehicles);
    if (!points.length) {
      svg.appendChild(node("text", { "class": "grid-label", x: W / 2, y: H / 2, "text-anchor": "middle" },
        "no vehicle has reported a position"));
      return;
    }
    if (template) { withTiles(svg, points, template); } else { plain(svg, points); }
  }

  return { draw: draw };
})();

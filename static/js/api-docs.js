// Starts the API docs viewer of the page (/docs: Swagger UI, /redoc: ReDoc) on the schema
// its element names; a file of its own, as the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  var swagger = document.getElementById("swagger-ui");
  if (swagger && window.SwaggerUIBundle) {
    window.SwaggerUIBundle({
      url: swagger.dataset.openapi,
      dom_id: "#swagger-ui",
      deepLinking: true,
      displayOperationId: true,
    });
  }
  var redoc = document.getElementById("redoc");
  if (redoc && window.Redoc) {
    window.Redoc.init(redoc.dataset.openapi, { hideDownloadButton: false }, redoc);
  }
})();

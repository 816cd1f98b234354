"""The web page: static HTML, CSS and JavaScript, shipped with the package and served by the app."""

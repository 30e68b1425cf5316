"""The HTTP surface: routes, request/response shapes, errors and the dependencies routes use."""

//! The router: an HTTP/TCP reverse proxy whose routing table is built from watched Routes, EndpointSlices and TLS Secrets and swapped atomically. Not built yet; see the router issue.

//! HTTP/1.1 server and client (work in progress).

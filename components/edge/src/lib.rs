//! The edge front: what a native host does besides serving the registry,
//! for runtimes that only call `wasi:http/incoming-handler` (Spin,
//! `wasmtime serve`).
//!
//! Every request but `/_skiff/...` goes to the registry's handler (dist-api)
//! untouched: the request and response handles are passed through, so bodies
//! stream as they would without this component. `/_skiff/gc` and
//! `/_skiff/scrub` run the gc and scrub components — which `skiff serve`
//! calls from its timers — on demand, behind a bearer token
//! (`admin_token` setting), each call bounded in time: a registry at the
//! edge is collected by something (cron, a CI job) calling these routes.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "edge",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:http/incoming-handler@0.2.12": generate,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
            "wasi:config/store@0.2.0-draft-2024-09-27": generate,
        },
    });
}

mod admin;
mod reply;

use bindings::exports::wasi::http::incoming_handler::Guest;
use bindings::wasi::http::incoming_handler as registry;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// Where the admin routes live; nothing of the distribution API starts so.
const ADMIN_PREFIX: &str = "/_skiff/";

struct Edge;

bindings::export!(Edge with_types_in bindings);

impl Guest for Edge {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path.starts_with(ADMIN_PREFIX) {
            admin::handle(&request, &path, out);
        } else {
            registry::handle(request, out);
        }
    }
}

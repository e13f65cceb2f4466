//! The OCI Distribution API (v1.1) as a `wasi:http` handler over the `store`
//! interface.
//!
//! This component owns the wire: routing, parsing every path segment, query
//! and header into checked types, status codes, headers and error bodies. It
//! holds no state between requests and never sees blob bytes: bodies go from
//! the request stream to the store, and from the store to the response
//! stream, as stream handles.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "dist-api",
        with: {
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
    });
}

mod blobs;
mod errors;
mod guard;
mod listing;
mod manifests;
mod request;
mod response;
mod route;
mod token;
mod uploads;

use bindings::exports::wasi::http::incoming_handler::Guest;
use guard::{Guard, Refusal};
use request::Request;
use response::Response;
use route::Route;
use skiff_core::{ErrorCode, RegistryError};
use std::rc::Rc;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

struct DistApi;

bindings::export!(DistApi with_types_in bindings);

impl Guest for DistApi {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mut req = Request::new(request);
        let head = req.is_head();
        // Shared: a streamed listing keeps the caller while it is sent.
        let guard = match Guard::authenticate(&req) {
            Ok(g) => Rc::new(g),
            Err(Refusal(r)) => return r.send(out, head),
        };
        let answer =
            route::parse(&req.method, &req.path).and_then(|r| match guard.admit(&r, &req) {
                Ok(()) => dispatch(r, &mut req, &guard),
                Err(Refusal(resp)) => Ok(resp),
            });
        let response = match answer {
            Ok(r) => r,
            // HTTP requires a 405 to say which methods the resource has.
            Err(e) if e.code == ErrorCode::MethodNotAllowed => {
                Response::error(e).header("Allow", route::allowed(&req.path))
            }
            Err(e) => Response::error(e),
        };
        response.send(out, head);
    }
}

fn dispatch(route: Route, req: &mut Request, guard: &Rc<Guard>) -> Result<Response, RegistryError> {
    match route {
        Route::Base => Ok(Response::json(200, b"{}".to_vec())),
        Route::Token => token::issue(req, guard),
        Route::Catalog => listing::catalog(req, guard),
        Route::Tags(name) => listing::tags(req, name),
        Route::Referrers(name, digest) => listing::referrers(req, &name, &digest),
        Route::GetManifest(name, r) => manifests::get(req, &name, &r),
        Route::PutManifest(name, r) => manifests::put(req, &name, &r),
        Route::DeleteManifest(name, r) => manifests::delete(&name, &r),
        Route::GetBlob(name, d) => blobs::get(req, &name, &d),
        Route::DeleteBlob(name, d) => blobs::delete(&name, &d),
        Route::StartUpload(name) => uploads::start(req, &name, guard),
        Route::UploadStatus(name, id) => uploads::status(&name, &id),
        Route::PatchUpload(name, id) => uploads::patch(req, &name, &id),
        Route::FinishUpload(name, id) => uploads::finish(req, &name, &id),
        Route::CancelUpload(name, id) => uploads::cancel(&name, &id),
    }
}

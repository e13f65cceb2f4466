//! `wasi:config/store` at the version Spin provides (0.2.0-draft-2024-09-27)
//! over the one wasmtime 48's `-S config` provides (0.2.0-rc.1): the same
//! two functions and error variant, so this only renames. Composed in front
//! of the edge compositions built for `wasmtime serve`.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "config-bridge",
        with: {
            "wasi:config/store@0.2.0-rc.1": generate,
            "wasi:config/store@0.2.0-draft-2024-09-27": generate,
        },
    });
}

use bindings::exports::wasi::config0_2_0_draft_2024_09_27::store::{Error, Guest};
use bindings::wasi::config0_2_0_rc_1::store as rc;

struct Bridge;

bindings::export!(Bridge with_types_in bindings);

fn error(e: rc::Error) -> Error {
    match e {
        rc::Error::Upstream(m) => Error::Upstream(m),
        rc::Error::Io(m) => Error::Io(m),
    }
}

impl Guest for Bridge {
    fn get(key: String) -> Result<Option<String>, Error> {
        rc::get(&key).map_err(error)
    }

    fn get_all() -> Result<Vec<(String, String)>, Error> {
        rc::get_all().map_err(error)
    }
}

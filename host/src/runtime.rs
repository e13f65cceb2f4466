//! The wasm side of the host: one engine, the registry component compiled
//! once (and cached on disk across starts), and a pre-linked `InstancePre`
//! from which every request gets a fresh instance in the pooling allocator.

use crate::objects::Disk;
use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// dist-api with storage plugged in, composed by build.rs.
static REGISTRY_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/registry.wasm"));

wasmtime::component::bindgen!({
    path: "../wit",
    world: "skiff:registry/host",
    imports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
    },
});

/// Per-request state of one instance.
pub struct Ctx {
    pub table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutbound,
    pub disk: Arc<Disk>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Ctx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The registry makes no outbound HTTP requests on the native host.
struct NoOutbound;

impl wasmtime_wasi_http::WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

pub struct Runtime {
    engine: Engine,
    pre: ProxyPre<Ctx>,
    disk: Arc<Disk>,
}

impl Runtime {
    pub fn new(disk: Arc<Disk>) -> Result<Runtime> {
        let engine = Engine::new(&engine_config())?;
        let component = load_component(&engine)?;
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        skiff::registry::objects::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
        let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runtime { engine, pre, disk })
    }

    pub fn new_store(&self) -> Store<Ctx> {
        let wasi = WasiCtx::builder().inherit_stderr().build();
        Store::new(
            &self.engine,
            Ctx {
                table: ResourceTable::new(),
                wasi,
                http: WasiHttpCtx::new(),
                hooks: NoOutbound,
                disk: self.disk.clone(),
            },
        )
    }

    pub fn pre(&self) -> &ProxyPre<Ctx> {
        &self.pre
    }
}

fn engine_config() -> Config {
    let mut pool = PoolingAllocationConfig::default();
    // Bounds on concurrent requests' instances; memory is reserved lazily.
    pool.total_component_instances(1000)
        .total_core_instances(4000)
        .total_memories(2000)
        .total_tables(2000)
        .max_memory_size(256 << 20);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Compile the embedded component, or load the machine code a previous start
/// cached. The cache key covers the component bytes and everything about the
/// engine that makes compiled code compatible.
fn load_component(engine: &Engine) -> Result<Component> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = format!(
        "{}-{:016x}",
        &hex::encode(Sha256::digest(REGISTRY_WASM))[..32],
        h.finish()
    );
    let dir = cache_dir();
    let path = dir.join(format!("registry-{key}.cwasm"));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of this same
        // component under a key that includes the engine's compatibility hash.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                tracing::debug!(path = %path.display(), "loaded precompiled component");
                return Ok(c);
            }
            Err(e) => tracing::warn!(error = %e, "ignoring unusable precompiled component"),
        }
    }
    let started = std::time::Instant::now();
    let component = Component::new(engine, REGISTRY_WASM)
        .map_err(anyhow::Error::from)
        .context("compiling the registry component")?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "compiled the registry component"
    );
    if let Err(e) = save(&dir, &path, &component.serialize()?) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot cache the compiled component");
    }
    Ok(component)
}

fn save(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SKIFF_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("skiff");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("skiff");
    }
    std::env::temp_dir().join("skiff-cache")
}

//! The wasm side of the host: one engine, the registry component compiled
//! once (and cached on disk across starts), and a pre-linked `InstancePre`
//! from which every request gets a fresh instance in the pooling allocator.

use crate::objects::Objects;
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
static GC_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/gc.wasm"));
static SCRUB_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/scrub.wasm"));

mod jobs_bindings {
    pub mod gc {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "skiff:registry/gc-job",
            imports: { default: async },
            exports: { default: async },
            with: {
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "skiff:registry/objects": crate::runtime::skiff::registry::objects,
            },
        });
    }
    pub mod scrub {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "skiff:registry/scrub-job",
            imports: { default: async },
            exports: { default: async },
            with: {
                "wasi:io": wasmtime_wasi::p2::bindings::io,
                "skiff:registry/objects": crate::runtime::skiff::registry::objects,
            },
        });
    }
}

pub use jobs_bindings::gc::exports::skiff::registry::gc as gc_api;
use jobs_bindings::gc::GcJobPre;
pub use jobs_bindings::scrub::exports::skiff::registry::scrub as scrub_api;
use jobs_bindings::scrub::ScrubJobPre;

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
    pub objects: Arc<Objects>,
    /// Background jobs hash at low CPU priority, so requests come first.
    pub priority: Priority,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Priority {
    Request,
    Background,
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
    gc: GcJobPre<Ctx>,
    scrub: ScrubJobPre<Ctx>,
    objects: Arc<Objects>,
    /// Settings the components read from their environment.
    guest_env: Vec<(String, String)>,
}

impl Runtime {
    pub fn new(objects: Arc<Objects>) -> Result<Runtime> {
        let engine = Engine::new(&engine_config())?;
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        skiff::registry::objects::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
        // The WASI crate the guests build with names wasi:http types even where
        // a component makes no HTTP calls; outbound requests are refused anyway.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let gc = GcJobPre::new(linker.instantiate_pre(&load_component(&engine, "gc", GC_WASM)?)?)?;
        let scrub = ScrubJobPre::new(
            linker.instantiate_pre(&load_component(&engine, "scrub", SCRUB_WASM)?)?,
        )?;
        let registry = load_component(&engine, "registry", REGISTRY_WASM)?;
        let pre = ProxyPre::new(linker.instantiate_pre(&registry)?)?;
        Ok(Runtime {
            engine,
            pre,
            gc,
            scrub,
            objects,
            guest_env: Vec::new(),
        })
    }

    /// Pass the settings the components read (they see no config file:
    /// the same components run under other hosts, which set these too).
    pub fn with_settings(mut self, cfg: &crate::config::Config) -> Runtime {
        if let Some(max) = cfg.max_blob_size {
            self.guest_env
                .push(("SKIFF_MAX_BLOB_SIZE".into(), max.to_string()));
        }
        self
    }

    pub fn new_store(&self, priority: Priority) -> Store<Ctx> {
        let wasi = WasiCtx::builder()
            .inherit_stderr()
            .envs(&self.guest_env)
            .build();
        Store::new(
            &self.engine,
            Ctx {
                table: ResourceTable::new(),
                wasi,
                http: WasiHttpCtx::new(),
                hooks: NoOutbound,
                objects: self.objects.clone(),
                priority,
            },
        )
    }

    pub fn pre(&self) -> &ProxyPre<Ctx> {
        &self.pre
    }

    /// Every repository, from a fresh gc instance.
    pub async fn repositories(&self) -> Result<Vec<String>> {
        let mut store = self.new_store(Priority::Background);
        let gc = self.gc.instantiate_async(&mut store).await?;
        gc.skiff_registry_gc()
            .call_repositories(&mut store)
            .await?
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Garbage-collect one repository on a fresh gc instance.
    pub async fn gc(&self, repo: &str, policy: &gc_api::Policy) -> Result<gc_api::Report> {
        let mut store = self.new_store(Priority::Background);
        let gc = self.gc.instantiate_async(&mut store).await?;
        gc.skiff_registry_gc()
            .call_run(&mut store, repo, policy)
            .await?
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Scrub one repository on a fresh scrub instance.
    pub async fn scrub(&self, repo: &str) -> Result<scrub_api::Report> {
        let mut store = self.new_store(Priority::Background);
        let scrub = self.scrub.instantiate_async(&mut store).await?;
        scrub
            .skiff_registry_scrub()
            .call_run(&mut store, repo)
            .await?
            .map_err(|e| anyhow::anyhow!(e))
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

/// Compile an embedded component, or load the machine code a previous start
/// cached. The cache key covers the component bytes and everything about the
/// engine that makes compiled code compatible.
fn load_component(engine: &Engine, name: &str, wasm: &[u8]) -> Result<Component> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let key = format!(
        "{}-{:016x}",
        &hex::encode(Sha256::digest(wasm))[..32],
        h.finish()
    );
    let dir = cache_dir();
    let path = dir.join(format!("{name}-{key}.cwasm"));
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
    let component = Component::new(engine, wasm)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("compiling the {name} component"))?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "compiled the {name} component"
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

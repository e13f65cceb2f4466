//! The wasm side of the host: one engine, the registry component compiled
//! once (and cached on disk across starts: `cache`), and a pre-linked
//! `InstancePre` from which every request gets a fresh instance in the
//! pooling allocator.
//!
//! The pool is sized from the number of request slots (see `admission`), so
//! it cannot run out before admission turns requests away. Guests are
//! interrupted by epochs: each store may run for a bounded time (requests) and
//! yields to the async runtime every tick, so one busy guest cannot starve
//! the others.

use crate::auth::Auth;
use crate::cache::load_component;
use crate::objects::Objects;
use crate::warm::{Instance, Warm};
use anyhow::{Context, Result};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, EngineWeak, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    UpdateDeadline,
};
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
        "skiff:registry/access.caller": crate::auth::CallerState,
    },
});

/// Per-request state of one instance.
pub struct Ctx {
    pub table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutbound,
    pub objects: Arc<Objects>,
    /// Who callers are and what they may do (`access`).
    pub auth: Arc<Auth>,
    /// The user a verified TLS client certificate names (`tls`).
    pub certified: Option<String>,
    /// Who the access provider found the caller to be, for the audit log.
    pub identified: Arc<std::sync::OnceLock<String>>,
    /// Background jobs hash at low CPU priority, so requests come first.
    pub priority: Priority,
    /// Guest time the current request (or job) may still use.
    budget: GuestBudget,
    /// What the instance's memories hold.
    memory: MemoryUse,
}

impl Ctx {
    /// Make a kept instance's state that of a new request: its caller, and
    /// a full time budget.
    pub fn begin_request(&mut self, certified: Option<String>, identified: Arc<OnceLock<String>>) {
        self.certified = certified;
        self.identified = identified;
        self.budget.refill();
    }

    /// Bytes of linear memory the instance's memories hold.
    pub fn memory_bytes(&self) -> usize {
        self.memory.bytes
    }
}

/// Counts what the instance's memories grow to (wasmtime asks before each
/// growth, the first allocation included). Growth is allowed up to the
/// pool's per-memory maximum.
#[derive(Debug, Default)]
struct MemoryUse {
    bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryUse {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.bytes = self.bytes.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
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

/// How much of the machine the guests may use.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests that may run at once, each on its own instance.
    pub request_slots: u32,
    /// Execution time one request's instance may use.
    pub request_budget: Duration,
}

impl Limits {
    /// For `skiff gc` and `skiff scrub`, which serve no requests.
    pub fn background_only() -> Limits {
        Limits {
            request_slots: 0,
            request_budget: Duration::ZERO,
        }
    }
}

/// One epoch tick: the unit of guest time accounting, and how often a
/// running guest yields to the async runtime.
pub const TICK: Duration = Duration::from_millis(10);

/// Instances background work holds at once: the scheduler runs one job at a
/// time, on one instance (the repository listing, then gc or scrub).
const BACKGROUND_INSTANCES: u32 = 2;
/// Spare instances beyond the slots, so the pool is never what fails.
const POOL_HEADROOM: u32 = 8;

/// What one instance may take from the pool.
struct Share {
    core_instances: u32,
    memories: u32,
    tables: u32,
}

/// The most one instance of any of the three components may take from the
/// pool. The pool enforces it per component (instantiating more fails), so
/// `instances × PER_INSTANCE` bounds the whole pool; the test
/// `every_component_fits_its_share_of_the_pool` checks the components fit.
/// (The registry takes 7 core instances, 2 memories and 4 tables; gc and
/// scrub 3, 1 and 2. Memories are the costly part: each reserves about 4 GiB
/// of address space, so the margin there is small.)
const PER_INSTANCE: Share = Share {
    core_instances: 12,
    memories: 3,
    tables: 6,
};

/// Guest execution one store may still use, in epoch ticks (`None`: no
/// limit). wasmtime calls the epoch callback only while wasm code runs, when
/// it runs (or resumes running) past a tick: a guest waiting in a host call,
/// for a client's body say, is not charged, so this bounds execution rather
/// than wall time.
#[derive(Debug)]
struct GuestBudget {
    limit: Option<Duration>,
    left: Option<u64>,
}

impl GuestBudget {
    fn new(limit: Option<Duration>) -> GuestBudget {
        let mut b = GuestBudget { limit, left: None };
        b.refill();
        b
    }

    /// The whole budget again, for the next request on the same instance.
    fn refill(&mut self) {
        let ticks = |d: Duration| (d.as_nanos() / TICK.as_nanos()).max(1) as u64;
        self.left = self.limit.map(ticks);
    }

    /// Charge one tick; false once the budget is spent.
    fn spend(&mut self) -> bool {
        match &mut self.left {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

pub struct Runtime {
    engine: Engine,
    limits: Limits,
    pre: ProxyPre<Ctx>,
    gc: GcJobPre<Ctx>,
    scrub: ScrubJobPre<Ctx>,
    objects: Arc<Objects>,
    auth: Arc<Auth>,
    /// Settings the components read from their environment.
    guest_env: Vec<(String, String)>,
    /// Registry instances kept between requests.
    pub warm: Warm,
}

impl Runtime {
    pub fn new(objects: Arc<Objects>, limits: Limits) -> Result<Runtime> {
        let engine = Engine::new(&engine_config(limits.request_slots))?;
        start_epoch_ticker(engine.weak())?;
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        skiff::registry::objects::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
        skiff::registry::access::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |c| c)?;
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
            limits,
            pre,
            gc,
            scrub,
            objects,
            auth: Arc::new(Auth::open()),
            guest_env: Vec::new(),
            warm: Warm::new(idle_instances(limits.request_slots)),
        })
    }

    /// Pass the settings the components read (they see no config file:
    /// the same components run under other hosts, which set these too).
    pub fn with_settings(mut self, cfg: &crate::config::Config, auth: Arc<Auth>) -> Runtime {
        self.auth = auth;
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
        let mut store = Store::new(
            &self.engine,
            Ctx {
                table: ResourceTable::new(),
                wasi,
                http: WasiHttpCtx::new(),
                hooks: NoOutbound,
                objects: self.objects.clone(),
                auth: self.auth.clone(),
                certified: None,
                identified: Default::default(),
                priority,
                // Background jobs may run as long as they need; they still yield.
                budget: GuestBudget::new(
                    (priority == Priority::Request).then_some(self.limits.request_budget),
                ),
                memory: MemoryUse::default(),
            },
        );
        store.limiter(|ctx| &mut ctx.memory);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let budget = &mut ctx.data_mut().budget;
            if budget.spend() {
                Ok(UpdateDeadline::Yield(1))
            } else {
                wasmtime::bail!(
                    "the registry component ran for more than {:?} on one request",
                    budget.limit.unwrap_or_default()
                )
            }
        });
        store
    }

    /// An instance for one request: a kept one if there is one, else a new
    /// one. Give it back with `warm.give_back` once its call returned.
    pub async fn request_instance(&self) -> Result<Instance> {
        if let Some(inst) = self.warm.take() {
            return Ok(inst);
        }
        let mut store = self.new_store(Priority::Request);
        let proxy = self.pre.instantiate_async(&mut store).await?;
        self.warm.created();
        Ok(Instance::new(store, proxy))
    }

    pub fn objects(&self) -> &Objects {
        &self.objects
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
    pub async fn scrub(&self, repo: &str, repair: bool) -> Result<scrub_api::Report> {
        let mut store = self.new_store(Priority::Background);
        let scrub = self.scrub.instantiate_async(&mut store).await?;
        scrub
            .skiff_registry_scrub()
            .call_run(&mut store, repo, repair)
            .await?
            .map_err(|e| anyhow::anyhow!(e))
    }
}

/// How many idle registry instances to keep: enough that every core finds
/// one when the requests running on it end and new ones start (a closed
/// loop of clients gives each back just before it takes the next), few
/// enough that the memory a burst touched is not all kept. Each holds a
/// request slot's share of the pool, so never more than the slots.
fn idle_instances(request_slots: u32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (4 * cores).min(request_slots as usize)
}

/// A pool with room for every request slot's instance, the idle ones kept
/// (a request that found none idle may build one while another is given
/// back), and background work. Memory is reserved as address space and
/// backed lazily.
fn engine_config(request_slots: u32) -> Config {
    let kept = u32::try_from(idle_instances(request_slots)).unwrap_or(request_slots);
    let instances = request_slots + kept + BACKGROUND_INSTANCES + POOL_HEADROOM;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_stacks(instances)
        .max_core_instances_per_component(PER_INSTANCE.core_instances)
        .max_memories_per_component(PER_INSTANCE.memories)
        .max_tables_per_component(PER_INSTANCE.tables)
        .total_core_instances(instances * PER_INSTANCE.core_instances)
        .total_memories(instances * PER_INSTANCE.memories)
        .total_tables(instances * PER_INSTANCE.tables)
        .max_memory_size(256 << 20);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// Advance the engine's epoch every tick, on a thread of its own so that
/// busy async workers cannot delay the ticks that make their guests yield.
/// It ends when the engine is gone.
fn start_epoch_ticker(engine: EngineWeak) -> Result<()> {
    std::thread::Builder::new()
        .name("skiff-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(TICK);
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        })
        .context("starting the epoch ticker thread")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Disk;

    #[test]
    fn a_budget_allows_its_ticks_then_stops() {
        let mut b = GuestBudget::new(Some(TICK * 3));
        assert!(b.spend() && b.spend() && b.spend());
        assert!(!b.spend(), "a fourth tick is over a three-tick budget");
        assert!(!b.spend(), "a spent budget stays spent");
        // Less than a tick still lets a guest run into its first tick.
        let mut tiny = GuestBudget::new(Some(Duration::from_millis(1)));
        assert!(tiny.spend());
        assert!(!tiny.spend());
        let mut none = GuestBudget::new(None);
        assert!((0..100_000).all(|_| none.spend()));
        let budget = GuestBudget::new(Some(Duration::from_secs(30)));
        assert_eq!(budget.left, Some(3000));
    }

    /// Instantiating fails if a component needs more than `PER_INSTANCE`, and
    /// the pool's counters show what each instance really takes.
    #[test]
    fn every_component_fits_its_share_of_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(Disk::new(dir.path().join("root"), false, false).unwrap());
        let rt = Runtime::new(
            Arc::new(Objects::new(disk, Vec::new())),
            Limits {
                request_slots: 1,
                request_budget: Duration::from_secs(30),
            },
        )
        .unwrap();
        let tokio = tokio::runtime::Runtime::new().unwrap();
        let m = rt.engine.pooling_allocator_metrics().unwrap();
        let used = || (m.core_instances(), m.memories() as u64, m.tables() as u64);
        tokio.block_on(async {
            let mut stores = Vec::new();
            for name in ["registry", "gc", "scrub"] {
                let before = used();
                let priority = match name {
                    "registry" => Priority::Request,
                    _ => Priority::Background,
                };
                let mut store = rt.new_store(priority);
                match name {
                    "registry" => drop(rt.pre.instantiate_async(&mut store).await.unwrap()),
                    "gc" => drop(rt.gc.instantiate_async(&mut store).await.unwrap()),
                    _ => drop(rt.scrub.instantiate_async(&mut store).await.unwrap()),
                }
                let after = used();
                let (core, mems, tables) =
                    (after.0 - before.0, after.1 - before.1, after.2 - before.2);
                println!("{name}: {core} core instances, {mems} memories, {tables} tables");
                assert!(
                    core >= 1 && core <= PER_INSTANCE.core_instances.into(),
                    "{name}"
                );
                assert!(mems <= PER_INSTANCE.memories.into(), "{name}");
                assert!(tables <= PER_INSTANCE.tables.into(), "{name}");
                // Kept alive so the next component's use is counted apart.
                stores.push(store);
            }
            assert_eq!(m.component_instances(), 3);
        });
    }
}

//! The threads that run the server's blocking work (SQLite, crypto, the ledger) off its async
//! threads. The most recently idle thread takes the next job, so under a steady load the same
//! few threads do the work and the others reach their keep-alive and exit.
//!
//! tokio's blocking pool, which ran this work before, has its idle threads wait on one
//! condition variable, and they are woken in turn: under a steady load each gets a job before
//! its keep-alive runs out, none exits, and the pool stays at the most jobs ever run at once.
//! Each thread keeps its own allocator heap, so the server's memory followed that count up
//! through a soak (BENCHMARKS.md, `bench load`). tokio's pool is left to tokio's and
//! `object_store`'s own file I/O.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle thread waits for a job before it exits (tokio's default too).
const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// Threads at most; jobs beyond wait in a queue (tokio's blocking pool has the same bound).
const MAX_THREADS: usize = 512;

/// The job panicked, or no thread could be started for it.
#[derive(Debug, thiserror::Error)]
#[error("the worker thread failed")]
pub struct WorkerFailed;

/// Run `f` on a worker thread; the future waits for its result without blocking the async
/// thread. The job is handed over at once, before the future is first polled. It runs inside
/// the caller's tokio runtime (`Handle::current` works in it), and to the end even if the
/// caller stops waiting (a client that hangs up does not cut a write short; a stopping
/// server waits for such jobs, up to a bound, through [`drain`]).
pub fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Result<T, WorkerFailed>> + Send + 'static {
    WORKERS
        .get_or_init(|| Workers::new(KEEP_ALIVE, MAX_THREADS))
        .run(f)
}

/// The process's worker threads now, busy, idle or starting (for `/metrics`).
pub fn threads() -> usize {
    WORKERS.get().map_or(0, Workers::threads)
}

/// Wait until no job is running or queued, at most `timeout`; `false` if some still were.
/// For a process about to exit. `true` only says the pool was empty at one moment: a task
/// still running may submit another job right after.
pub fn drain(timeout: Duration) -> bool {
    WORKERS.get().is_none_or(|w| w.drain(timeout))
}

/// The process's one pool: every server in it shares its threads.
static WORKERS: OnceLock<Workers> = OnceLock::new();

type Job = Box<dyn FnOnce() + Send>;

/// A pool of worker threads, started as jobs need them.
pub(crate) struct Workers {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Notified when `State::jobs` falls to 0.
    all_done: Condvar,
    keep_alive: Duration,
    max_threads: usize,
}

struct State {
    /// Jobs waiting for a busy or starting thread (none is idle, and no more may start).
    queue: VecDeque<Job>,
    /// Idle threads, the most recently idle last: a job goes to the last one.
    idle: Vec<Arc<Slot>>,
    /// Threads alive, busy or idle, and threads being started.
    threads: usize,
    /// Jobs submitted and not yet run to the end or dropped (see [`Counted`]).
    jobs: usize,
}

/// Held by each job for as long as it exists: counts it in `State::jobs` until it has run
/// (its answer sent) or was dropped unrun, however that happens.
struct Counted(Arc<Shared>);

impl Counted {
    fn new(shared: &Arc<Shared>) -> Counted {
        lock(&shared.state).jobs += 1;
        Counted(shared.clone())
    }
}

impl Drop for Counted {
    // Never dropped while the state lock is held (queued jobs are dropped after it is
    // released), or this would deadlock.
    fn drop(&mut self) {
        let mut state = lock(&self.0.state);
        state.jobs -= 1;
        if state.jobs == 0 {
            self.0.all_done.notify_all();
        }
    }
}

/// Where an idle thread waits for the job handed to it.
struct Slot {
    job: Mutex<Option<Job>>,
    handed: Condvar,
}

impl Workers {
    pub(crate) fn new(keep_alive: Duration, max_threads: usize) -> Workers {
        Workers {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    idle: Vec::new(),
                    threads: 0,
                    jobs: 0,
                }),
                all_done: Condvar::new(),
                keep_alive,
                max_threads: max_threads.max(1),
            }),
        }
    }

    /// See [`run`].
    pub(crate) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, WorkerFailed>> + Send + 'static {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::try_current().ok();
        let counted = Counted::new(&self.shared);
        self.submit(Box::new(move || {
            // Dropped last, once the answer is sent (or the job unwound).
            let _counted = counted;
            let _entered = runtime.as_ref().map(|r| r.enter());
            // A panic unwinds through here and drops `tx`: the caller sees `WorkerFailed`.
            // The caller may have stopped waiting; the job has still run.
            let _ = tx.send(f());
        }));
        async move { rx.await.map_err(|_| WorkerFailed) }
    }

    /// Threads now, busy, idle or starting.
    fn threads(&self) -> usize {
        lock(&self.shared.state).threads
    }

    /// See [`drain`].
    pub(crate) fn drain(&self, timeout: Duration) -> bool {
        // A timeout too large for an `Instant` waits as long as it takes.
        let deadline = Instant::now().checked_add(timeout);
        let mut state = lock(&self.shared.state);
        while state.jobs > 0 {
            let now = Instant::now();
            let left = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .all_done
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn submit(&self, job: Job) {
        let Some(job) = self.hand_over(job, true) else {
            return;
        };
        let shared = self.shared.clone();
        // The job is sent once the thread exists: if none can be started, it is still here.
        let (start_tx, start_rx) = std::sync::mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("medvault-worker".into())
            .spawn(move || {
                if let Ok(job) = start_rx.recv() {
                    work(&shared, job);
                }
            });
        match started {
            // The thread keeps the receiver until it has the job.
            Ok(_) => drop(start_tx.send(job)),
            Err(e) => {
                tracing::error!(error = %e, "could not start a worker thread");
                let stranded = {
                    let mut state = lock(&self.shared.state);
                    state.threads -= 1;
                    // Jobs queued while this thread was counted wait for a thread; with
                    // none left, maybe none ever starts: their callers are told
                    // `WorkerFailed` (dropped after the lock is released).
                    if state.threads == 0 {
                        std::mem::take(&mut state.queue)
                    } else {
                        VecDeque::new()
                    }
                };
                drop(stranded);
                // To a thread that is idle, busy or starting; with none, the job is dropped
                // and its caller told `WorkerFailed`.
                drop(self.hand_over(job, false));
            }
        }
    }

    /// Give `job` to the most recently idle thread, or queue it for a busy one once there
    /// are as many threads as allowed (or, without `may_start`, any thread at all). `Some`
    /// gives it back: with `may_start`, for a new thread, already counted.
    fn hand_over(&self, job: Job, may_start: bool) -> Option<Job> {
        let mut state = lock(&self.shared.state);
        if let Some(slot) = state.idle.pop() {
            // Taken off `idle` under the state lock: a thread whose wait times out now
            // finds itself gone from `idle`, and waits for this job instead of exiting.
            drop(state);
            *lock(&slot.job) = Some(job);
            slot.handed.notify_one();
            return None;
        }
        if may_start && state.threads < self.shared.max_threads {
            state.threads += 1;
            return Some(job);
        }
        if state.threads == 0 {
            return Some(job);
        }
        // A busy thread takes it when it is done, or a starting one when it has run its
        // first job (a thread only goes idle, and so only exits, when the queue is empty;
        // the last one that fails to start drops the queue).
        state.queue.push_back(job);
        None
    }
}

/// A worker thread's life: run its job, then the queued ones, then wait (most recently idle
/// first in line) for the next one until the keep-alive runs out.
fn work(shared: &Shared, first: Job) {
    let slot = Arc::new(Slot {
        job: Mutex::new(None),
        handed: Condvar::new(),
    });
    let mut job = first;
    loop {
        // Jobs from `run` catch nothing themselves; a panic must not end the thread
        // without taking it out of the count.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        let mut state = lock(&shared.state);
        if let Some(next) = state.queue.pop_front() {
            job = next;
            continue;
        }
        state.idle.push(slot.clone());
        drop(state);
        match wait_for_job(shared, &slot) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// Wait on `slot` for a job; `None` once the keep-alive has run out and the thread has
/// taken itself off the idle list (and out of the count).
fn wait_for_job(shared: &Shared, slot: &Arc<Slot>) -> Option<Job> {
    let deadline = Instant::now() + shared.keep_alive;
    let mut handed = lock(&slot.job);
    loop {
        if let Some(job) = handed.take() {
            return Some(job);
        }
        let now = Instant::now();
        if now < deadline {
            handed = slot
                .handed
                .wait_timeout(handed, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        // Timed out. Still on the idle list: nobody will hand this thread a job, so it
        // leaves. Off it: a submitter took it and is handing a job over, so wait for that.
        drop(handed);
        {
            let mut state = lock(&shared.state);
            if let Some(at) = state.idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
                state.idle.remove(at);
                state.threads -= 1;
                return None;
            }
        }
        handed = lock(&slot.job);
        while handed.is_none() {
            handed = slot.handed.wait(handed).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The pool's locks guard plain data that a panic cannot leave half-changed (jobs run
/// outside them, and their panics are caught).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// A lost job fails the test instead of hanging it.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("a job was lost")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_answer_and_a_panic_is_the_jobs_failure_only() {
        // One thread at most: later jobs queue for it instead of starting another, so a
        // thread the panic had ended would show as a hang.
        let workers = Workers::new(Duration::from_secs(10), 1);
        assert_eq!(within(workers.run(|| 6 * 7)).await.unwrap(), 42);
        let failed = within(workers.run(|| -> u32 { panic!("a job that panics") })).await;
        assert!(failed.is_err());
        assert_eq!(
            within(workers.run(|| "still working")).await.unwrap(),
            "still working"
        );
        assert_eq!(workers.threads(), 1);
        // Jobs run inside the caller's runtime (the repository's blob reads rely on it).
        let inside = within(workers.run(|| tokio::runtime::Handle::try_current().is_ok())).await;
        assert!(inside.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_beyond_the_thread_limit_wait_their_turn() {
        let workers = Workers::new(Duration::from_secs(10), 2);
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let jobs: Vec<_> = (0..10)
            .map(|i| {
                let (running, most) = (running.clone(), most.clone());
                workers.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        let done: Vec<usize> = within(join_all(jobs)).await;
        assert_eq!(done, (0..10).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(workers.threads(), 2);
    }

    /// The point of the pool: after a burst needed eight threads, a steady trickle of jobs
    /// is served by one of them and the other seven exit. tokio's blocking pool (or this one
    /// handing jobs to the longest-idle thread) keeps all eight: each gets a job every eight
    /// jobs, well inside its keep-alive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_left_idle_by_a_steady_load_exit() {
        let workers = Workers::new(Duration::from_secs(1), 64);
        let gate = Arc::new(std::sync::Barrier::new(8));
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let gate = gate.clone();
                workers.run(move || {
                    gate.wait();
                })
            })
            .collect();
        within(join_all(burst)).await;
        assert_eq!(workers.threads(), 8);
        // One job every 10 ms: each of eight threads taken in turn would get one every 80 ms.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut fewest = usize::MAX;
        while Instant::now() < deadline {
            within(workers.run(|| ())).await.unwrap();
            fewest = fewest.min(workers.threads());
            if fewest == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(fewest, 1, "idle threads did not exit under a steady load");
    }

    /// Jobs handed over just as their threads time out: a keep-alive of 200 µs, and four
    /// threads submitting at gaps around it. Every job answers (a job handed to a thread
    /// that then exits would be dropped, and its caller told `WorkerFailed`), and once the
    /// jobs stop every thread exits and the count comes back to 0. The race it looks for
    /// depends on timer jitter: a thread that exits although a job was handed to it failed
    /// this test in most runs, not all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hand_overs_racing_the_keep_alive_lose_nothing() {
        let workers = Arc::new(Workers::new(Duration::from_micros(200), 8));
        let runtime = tokio::runtime::Handle::current();
        let submitters: Vec<_> = (0..4u64)
            .map(|t| {
                let (workers, runtime) = (workers.clone(), runtime.clone());
                std::thread::spawn(move || {
                    for i in 0..3000u64 {
                        let job = workers.run(move || t * 10_000 + i);
                        // A job never answered fails this thread, and so the test, in time.
                        let got = runtime.block_on(async {
                            tokio::time::timeout(Duration::from_secs(30), job).await
                        });
                        assert_eq!(got.unwrap().unwrap(), t * 10_000 + i);
                        std::thread::sleep(Duration::from_micros((i * 7 + t * 13) % 400));
                    }
                })
            })
            .collect();
        within(tokio::task::spawn_blocking(move || {
            for s in submitters {
                s.join().unwrap();
            }
        }))
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while workers.threads() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(workers.threads(), 0);
        assert!(workers.drain(Duration::ZERO));
    }

    /// A stopping server waits for jobs whose callers stopped waiting, up to its bound.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drain_waits_for_running_jobs_up_to_its_bound() {
        let workers = Workers::new(Duration::from_secs(10), 4);
        let finished = Arc::new(AtomicBool::new(false));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let f = finished.clone();
        // Nobody awaits this job's answer, as when a client hangs up.
        drop(workers.run(move || {
            let _ = hold.recv();
            std::thread::sleep(Duration::from_millis(50));
            f.store(true, Ordering::SeqCst);
        }));
        assert!(!workers.drain(Duration::from_millis(50)), "the job is held");
        release.send(()).unwrap();
        assert!(workers.drain(Duration::from_secs(20)));
        assert!(
            finished.load(Ordering::SeqCst),
            "drain returned before the job ended"
        );
    }

    /// Await every job, in order (the crate does without the `futures` crate).
    async fn join_all<T: Send + 'static>(
        jobs: Vec<impl std::future::Future<Output = Result<T, WorkerFailed>> + Send + 'static>,
    ) -> Vec<T> {
        let handles: Vec<_> = jobs.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap().unwrap());
        }
        out
    }
}

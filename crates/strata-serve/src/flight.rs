//! Single flight: concurrent callers for the same key share one computation, which runs as
//! its own task, so it finishes (and its result is cached elsewhere) even when every caller
//! has gone away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type Flight<V> = Shared<BoxFuture<'static, V>>;

/// The flights in progress, by key.
pub struct Flights<V: Clone + Send + Sync + 'static> {
    running: Arc<Mutex<HashMap<String, Flight<V>>>>,
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    pub fn new() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The flight for `key`: the running one, or a new one started from `make`. The second
    /// value is whether this call started it. `lost` is what callers get if the task panics.
    pub fn join<F>(&self, key: &str, make: impl FnOnce() -> F, lost: V) -> (Flight<V>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = running.get(key) {
            return (f.clone(), false);
        }
        let fut = make();
        let map = self.running.clone();
        let owned_key = key.to_owned();
        let task = tokio::spawn(async move {
            let v = fut.await;
            map.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&owned_key);
            v
        });
        let flight: Flight<V> = async move { task.await.unwrap_or(lost) }.boxed().shared();
        running.insert(key.to_owned(), flight.clone());
        (flight, true)
    }
}

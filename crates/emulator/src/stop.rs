//! The stop signal: `Running` holds the sender; the HTTP and HTTPS servers, and a
//! request held back by the `slow` fault, wait on a receiver. Its own module so that the
//! servers and the routes can share it without importing each other.

use tokio::sync::watch;

/// Resolves once a stop is asked for, or once nobody can ask any more (the sender, held by
/// `Running`, was dropped).
pub(crate) async fn stop_requested(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which is a request to stop as well.
    let _ = stop.wait_for(|stop| *stop).await;
}

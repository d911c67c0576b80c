//! The signal a long-running binary (the server, the agent daemon) stops on: Ctrl-C, or SIGTERM on Unix (what
//! `systemctl stop`, `docker stop` and Kubernetes send).

/// Resolves when the process is asked to stop. Where a signal cannot be listened for, that signal is ignored
/// rather than taken as a request to stop.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

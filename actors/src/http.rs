//! The HTTP side: `/health`, Prometheus `/metrics` and the network storage API under `/api/v1`
//! ([`crate::api`]) (actix-web on its own thread, so a slow scraper never delays a SIP worker).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};

use crate::shared::Shared;

async fn health(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    if shared.is_draining() {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("draining\n")
    } else {
        HttpResponse::Ok().content_type("text/plain").body("ok\n")
    }
}

async fn metrics(shared: web::Data<Arc<Shared>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(shared.render_metrics())
}

/// Binds the HTTP server; the returned server runs when awaited or spawned.
pub fn server(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> std::io::Result<(actix_web::dev::Server, SocketAddr)> {
    // A bad `--api-tokens` file stops startup.
    let api = crate::api::ApiState::new(shared.clone())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let api = web::Data::new(api);
    let data = web::Data::new(shared);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics))
            .service(crate::api::scope(api.clone()))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)?;
    let bound = server.addrs().first().copied().unwrap_or(addr);
    Ok((server.run(), bound))
}

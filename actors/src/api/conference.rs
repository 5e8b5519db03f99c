//! Conference administration (issue 6, decision 0014): list running conferences, start and
//! end predefined ones, mute participants. Every endpoint takes the administrator's bearer
//! token (`--api-admin-token`, RFC 6750 §2.1), not a user's: these act on everyone's calls.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::{Api, ApiError, Reply};
use crate::conference::{EndConference, MuteParticipant, StartConference};

/// Checks the administrator's token: 503 when none is configured, 401 when it is wrong.
fn admin(api: &Api, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(token) = api.shared.config.api_admin_token.as_deref() else {
        return Err(ApiError::Unavailable(
            "conference administration disabled: no --api-admin-token",
        ));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compared in constant time: the token is a secret.
    let ok = given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(vec![
            "Bearer realm=\"cpm-admin\"".to_string()
        ]))
    }
}

/// `GET /conferences`: the running conferences with their participants.
pub(super) async fn list(api: Api, req: HttpRequest) -> Reply {
    admin(&api, &req)?;
    Ok(HttpResponse::Ok().json(api.shared.conferences.list()))
}

/// `POST /conferences/{name}/start`: starts a predefined conference (the focus INVITEs its
/// participants). 404 unknown, 409 running, 503 over `--conference-max`.
pub(super) async fn start(api: Api, req: HttpRequest, path: web::Path<String>) -> Reply {
    admin(&api, &req)?;
    let name = path.into_inner();
    let registry = &api.shared.conferences;
    if registry.predefined(&name).is_none() {
        return Err(ApiError::NotFound("predefined conference"));
    }
    if registry.get(&name).is_some() {
        return Err(ApiError::Conflict("conference already running"));
    }
    let door = registry
        .worker_for(&name)
        .ok_or(ApiError::Unavailable("workers not started"))?;
    match door.send(StartConference { name: name.clone() }).await {
        Ok(Ok(focus)) => {
            Ok(HttpResponse::Ok().json(serde_json::json!({ "id": name, "focus": focus })))
        }
        Ok(Err(why)) if why.contains("Too Many") => {
            Err(ApiError::Unavailable("too many conferences"))
        }
        Ok(Err(why)) => Err(ApiError::Conflict(if why.contains("Running") {
            "conference already running"
        } else {
            "conference not started"
        })),
        Err(_) => Err(ApiError::Unavailable("worker unavailable")),
    }
}

/// `POST /conferences/{id}/end`: BYE to every participant; the conference ends.
pub(super) async fn end(api: Api, req: HttpRequest, path: web::Path<String>) -> Reply {
    admin(&api, &req)?;
    let running = api
        .shared
        .conferences
        .get(&path.into_inner())
        .ok_or(ApiError::NotFound("conference"))?;
    running
        .addr
        .send(EndConference)
        .await
        .map_err(|_| ApiError::NotFound("conference"))?;
    Ok(HttpResponse::NoContent().finish())
}

/// The body of a mute request.
#[derive(Debug, Deserialize)]
pub(super) struct MuteBody {
    muted: bool,
}

/// `POST /conferences/{id}/participants/{pid}/mute` `{"muted": bool}`.
pub(super) async fn mute(
    api: Api,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<MuteBody>,
) -> Reply {
    admin(&api, &req)?;
    let (id, pid) = path.into_inner();
    let pid: u32 = pid.parse().map_err(|_| ApiError::NotFound("participant"))?;
    let running = api
        .shared
        .conferences
        .get(&id)
        .ok_or(ApiError::NotFound("conference"))?;
    let found = running
        .addr
        .send(MuteParticipant {
            id: pid,
            muted: body.muted,
        })
        .await
        .map_err(|_| ApiError::NotFound("conference"))?;
    if !found {
        return Err(ApiError::NotFound("participant"));
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "id": pid, "muted": body.muted })))
}

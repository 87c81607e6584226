//! The file server's multipart uploads (`POST`), what seed 004's clients
//! send from a browser's `FormData`: apart from `PUT` because a form is
//! parsed part by part (its filenames are the sender's word, sanitized
//! here), while both share the upload's streaming, limits, quotas and
//! keys (see the parent module).

use std::path::{Path, PathBuf};

use actix_multipart::{Field, Multipart, MultipartError};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::{
    authenticate, check_client, file_size, require_owner, resolve, still_there, Caller, FileUrl,
    Files, FsError, Pace, Upload,
};
use crate::protocol::files::{Stored, StoredFile, StoredFiles, MAX_FILES_PER_POST};

/// The multipart uploads of seed 004's clients (a browser's `FormData`):
/// at `/fs/{client}/{path}` one file, the content of the form's part (or of
/// its parts, as long as they all carry the first one's filename: the
/// pieces of one file); at `/fs/{client}/` one file per part, named by the
/// part's filename, sanitized.
pub(super) async fn post_files(
    req: HttpRequest,
    form: Multipart,
    files: web::Data<Files>,
) -> Result<HttpResponse, FsError> {
    let FileUrl { client, path } = FileUrl::of(&req)?;
    let file = if path.is_empty() {
        check_client(&client)?;
        None
    } else {
        Some(resolve(&files.dir, &client, &path)?)
    };
    let who = authenticate(&req, &files, true)?;
    require_owner(&who, &client, &files)?;
    let is_form = req
        .mime_type()
        .ok()
        .flatten()
        .is_some_and(|m| m.essence_str() == actix_web::mime::MULTIPART_FORM_DATA.essence_str());
    if !is_form {
        return Err(FsError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a POST uploads a multipart/form-data body (a browser's FormData); \
             send a file's bytes as they are with PUT",
        ));
    }
    match file {
        Some(file) => post_one(form, &files, &who, &client, &file).await,
        None => post_several(form, &files, &who, &client).await,
    }
}

/// `POST /fs/{client}/{path}`: the form's file stored at `path`.
async fn post_one(
    mut form: Multipart,
    files: &Files,
    who: &Caller,
    client: &str,
    file: &Path,
) -> Result<HttpResponse, FsError> {
    let mut upload = Upload::start(files, client, file_size(file).await).await?;
    let mut pace = Pace::new(files.idle_timeout);
    // The first part's filename (or none), which every part must carry.
    let mut named: Option<Option<String>> = None;
    while let Some(field) = pace.next(&mut form).await? {
        let mut field = field.map_err(bad_form)?;
        let name = filename(&field).map(str::to_owned);
        match &named {
            None => named = Some(name),
            Some(first) if *first != name => {
                return Err(FsError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "this form holds several files: a POST to /fs/<name>/<path> stores one \
                     (post several to /fs/<name>/, each named by its filename)",
                ))
            }
            Some(_) => {}
        }
        receive(&mut field, &mut upload, &mut pace).await?;
    }
    if named.is_none() {
        return Err(no_part());
    }
    still_there(who, client, files)?;
    let size = upload.store(file).await?;
    Ok(HttpResponse::Created().json(Stored { size }))
}

/// `POST /fs/{client}/`: each file of the form stored under its filename,
/// sanitized; parts that carry the same filename are pieces of one file.
async fn post_several(
    mut form: Multipart,
    files: &Files,
    who: &Caller,
    client: &str,
) -> Result<HttpResponse, FsError> {
    // The files in the order of their first part: name, path, upload.
    let mut uploads: Vec<(String, PathBuf, Upload<'_>)> = Vec::new();
    let mut pace = Pace::new(files.idle_timeout);
    while let Some(field) = pace.next(&mut form).await? {
        let mut field = field.map_err(bad_form)?;
        let given = filename(&field).ok_or_else(|| {
            FsError::new(
                StatusCode::PRECONDITION_REQUIRED,
                "every part of a POST to /fs/<name>/ is a file: its Content-Disposition needs a filename",
            )
        })?;
        // The name a part gives is the sender's word: only a plain name in
        // the client's own folder is kept of it.
        let name = sanitize_filename::sanitize(given);
        let index = match uploads.iter().position(|(known, ..)| *known == name) {
            Some(index) => index,
            None => {
                if name.is_empty() {
                    return Err(FsError::new(
                        StatusCode::BAD_REQUEST,
                        format!("the filename {given:?} names no file once sanitized"),
                    ));
                }
                if uploads.len() == MAX_FILES_PER_POST {
                    return Err(FsError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("a POST stores at most {MAX_FILES_PER_POST} files"),
                    ));
                }
                let path = resolve(&files.dir, client, &name)?;
                let upload = Upload::start(files, client, file_size(&path).await).await?;
                uploads.push((name, path, upload));
                uploads.len() - 1
            }
        };
        receive(&mut field, &mut uploads[index].2, &mut pace).await?;
    }
    if uploads.is_empty() {
        return Err(no_part());
    }
    still_there(who, client, files)?;
    // A folder in the way of one file refuses them all, before any is stored.
    for (name, path, _) in &uploads {
        if tokio::fs::metadata(path).await.is_ok_and(|m| m.is_dir()) {
            return Err(FsError::new(
                StatusCode::CONFLICT,
                format!("a folder exists at {name:?}"),
            ));
        }
    }
    let mut stored = Vec::with_capacity(uploads.len());
    for (name, path, upload) in uploads {
        let size = upload.store(&path).await?;
        stored.push(StoredFile { name, size });
    }
    Ok(HttpResponse::Created().json(StoredFiles { files: stored }))
}

/// Streams a form's part into an upload.
async fn receive(
    field: &mut Field,
    upload: &mut Upload<'_>,
    pace: &mut Pace,
) -> Result<(), FsError> {
    while let Some(chunk) = pace.next(field).await? {
        let chunk = chunk.map_err(bad_form)?;
        upload.write(&chunk).await?;
        pace.advanced(chunk.len());
    }
    Ok(())
}

/// The filename a form's part gives, if any.
fn filename(field: &Field) -> Option<&str> {
    field.content_disposition()?.get_filename()
}

fn bad_form(e: MultipartError) -> FsError {
    FsError::new(
        StatusCode::BAD_REQUEST,
        format!("the multipart body cannot be read: {e}"),
    )
}

fn no_part() -> FsError {
    FsError::new(
        StatusCode::BAD_REQUEST,
        "the form holds no file: send it as a part of the multipart body",
    )
}

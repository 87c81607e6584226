//! Jobs (PROTOCOL §19): one agent request run once on every host a target
//! expression names, with a record that outlives the socket that asked
//! for it, the gateway process and the replica that coordinates it.
//!
//! [`Jobs`] is what the gateway's answers and its HTTP API call: it
//! resolves a target against the [`Inventory`], writes the job and every
//! host's row to the cluster's [`Ledger`] *before* anything is sent, and
//! starts the job's [`coordinator`] on this replica under a lease. Reads
//! (`job_get`, `jobs`, `job_output`) come from the ledger, on any replica.
//! A cancellation reaches a coordinator on this replica at once and one on
//! another through the store (it looks every lease renewal).
//!
//! Every replica's janitor looks for active jobs whose lease nobody
//! renews (their replica died, or the gateway restarted) and takes them
//! over: the coordinator starts again from the ledger's rows and asks the
//! hosts it cannot know about again; their agents answer from their
//! records, so no host runs a job twice.

mod coordinator;
mod record;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::{Arbiter, ArbiterHandle};
use tokio::sync::{mpsc, oneshot};

use self::coordinator::{Coordinator, End};
use self::record::Record;
use crate::cluster::ledger::Ledger;
use crate::cluster::store::{Store, StoreError, Table};
use crate::config::Settings;
use crate::fleet::Inventory;
use crate::namespace::Namespace;
use crate::protocol::agent::{Failure, Reason};
use crate::protocol::jobs::{
    HostRef, JobDetail, JobHost, JobId, JobInfo, JobPreview, JobQuery, JobSpec, JobState, JobsPage,
    JobsQuery, PreviewHost, MAX_JOBS_PAGE, MAX_JOB_HOSTS_PAGE,
};
use crate::protocol::selector::Selector;
use crate::protocol::HostKind;

/// The leases that say which replica coordinates a job.
const LEASES: Table = Table::new("job_leases");

/// Cancellations asked for through a replica that does not coordinate the
/// job: the coordinator reads them.
const CANCELS: Table = Table::new("job_cancels");

/// How often the janitor looks for jobs nobody coordinates.
const JANITOR: Duration = Duration::from_secs(2);

/// What a coordinator is told while it runs.
pub(crate) enum Command {
    /// Stop the job; `by` is who asked.
    Cancel { by: Option<String> },
}

/// The settings jobs run with.
pub(crate) struct JobSettings {
    pub job_window: usize,
    pub host_gone_secs: u64,
    pub lease_ttl: Duration,
    pub max_history_size: u64,
    max_jobs: usize,
    max_job_hosts: usize,
    retention: Duration,
}

/// What the coordinators share.
pub(crate) struct Shared {
    pub namespace: Namespace,
    pub ledger: Arc<dyn Ledger>,
    pub store: Arc<dyn Store>,
    /// This process's name as a lease holder.
    pub holder: String,
    pub settings: JobSettings,
    /// The jobs this process coordinates, with their command channels.
    running: Mutex<HashMap<JobId, mpsc::Sender<Command>>>,
}

impl Shared {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, mpsc::Sender<Command>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Who creates a job: what the gateway verified of the client.
pub struct Creator {
    pub user: Option<String>,
    pub roles: Vec<String>,
    pub client: String,
}

/// What `job_create` answers.
pub enum Created {
    Job(Box<JobInfo>),
    Preview(JobPreview),
}

/// The jobs of this gateway (see the module documentation).
pub struct Jobs {
    shared: Arc<Shared>,
    inventory: Arc<Inventory>,
    /// Where coordinators run: off the sessions' threads.
    arbiter: ArbiterHandle,
}

impl Jobs {
    /// Starts the janitor, which also takes over the jobs a previous run
    /// of this gateway left active. Must run inside an actix system.
    pub fn start(
        settings: &Settings,
        namespace: Namespace,
        inventory: Arc<Inventory>,
        ledger: Arc<dyn Ledger>,
        store: Arc<dyn Store>,
    ) -> Arc<Jobs> {
        let shared = Arc::new(Shared {
            namespace,
            ledger,
            store,
            holder: uuid::Uuid::new_v4().to_string(),
            settings: JobSettings {
                job_window: settings.job_window,
                host_gone_secs: settings.job_host_gone_secs,
                lease_ttl: Duration::from_millis(settings.node_lease_ms.max(3_000)),
                max_history_size: settings.max_history_size,
                max_jobs: settings.max_jobs,
                max_job_hosts: settings.max_job_hosts,
                retention: Duration::from_secs(settings.job_retention_days * 86_400),
            },
            running: Mutex::default(),
        });
        let jobs = Arc::new(Jobs {
            shared,
            inventory,
            arbiter: Arbiter::new().handle(),
        });
        actix::spawn(janitor(jobs.clone()));
        jobs
    }

    /// Creates a job (or, with `dry_run`, says what its target resolves
    /// to): written to the ledger, its service created, before this
    /// answers.
    pub async fn create(&self, spec: JobSpec, creator: Creator) -> Result<Created, Failure> {
        spec.check().map_err(Failure::bad_argument)?;
        let selector =
            Selector::parse(&spec.target).map_err(|e| Failure::bad_argument(e.to_string()))?;
        let directory = self.shared.namespace.directory();
        let max = self.shared.settings.max_job_hosts;
        let hosts = self
            .inventory
            .matching(
                None,
                spec.online,
                Some(&selector),
                &|name| directory.named(name).is_some(),
                max + 1,
            )
            .await
            .map_err(unavailable)?;
        drop(directory);
        // Jobs run on agents: the adapters' hosts keep no job records.
        let hosts: Vec<_> = hosts
            .into_iter()
            .filter(|h| h.kind == HostKind::Agent)
            .collect();
        if hosts.is_empty() {
            return Err(Failure::new(
                Reason::NotFound,
                format!(
                    "the target {:?} names no agent of the inventory{}",
                    spec.target,
                    if spec.online {
                        " that is connected"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if hosts.len() > max {
            return Err(Failure::new(
                Reason::Limit,
                format!("the target names more than {max} hosts (max_job_hosts)"),
            ));
        }
        if spec.dry_run {
            let hosts = hosts
                .into_iter()
                .map(|h| PreviewHost {
                    name: h.name,
                    online: h.online,
                })
                .collect();
            return Ok(Created::Preview(JobPreview { hosts }));
        }
        if self.shared.running().len() >= self.shared.settings.max_jobs {
            return Err(Failure::new(
                Reason::Limit,
                format!(
                    "this gateway runs {} jobs already (max_jobs): try again when one is over",
                    self.shared.settings.max_jobs
                ),
            ));
        }
        let now = now_ms();
        let id = JobId::random();
        let rows: Vec<JobHost> = hosts
            .iter()
            .map(|h| JobHost::queued(&h.name, now))
            .collect();
        let info = JobInfo {
            id: id.clone(),
            spec,
            user: creator.user,
            client: creator.client,
            created_ms: now,
            finished_ms: None,
            state: JobState::Running,
            stopped_by: None,
            hosts: rows.len() as u32,
            counts: record::counts(rows.iter()),
        };
        let record = Record {
            wait_until_ms: info.spec.wait_secs.map(|s| now + s * 1000),
            info,
            roles: creator.roles,
            cancelled: false,
        };
        let shared = &self.shared;
        shared
            .ledger
            .create(
                id.as_str(),
                now,
                record.encode(),
                rows.iter().map(record::row).collect(),
            )
            .await
            .map_err(unavailable)?;
        shared
            .store
            .acquire(
                LEASES,
                id.as_str(),
                &shared.holder,
                shared.settings.lease_ttl,
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(target: "audit", job = %id, user = ?record.info.user, client = %record.info.client,
            target_expression = %record.info.spec.target, request = record.info.spec.request.name().as_str(),
            hosts = rows.len(), "job created");
        let info = record.info.clone();
        let (ready, started) = oneshot::channel();
        self.coordinate(record, rows, Some(ready), false);
        match started.await {
            Ok(Ok(())) => Ok(Created::Job(Box::new(info))),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(Failure::new(
                Reason::Unavailable,
                "the job's coordinator stopped",
            )),
        }
    }

    /// Starts a coordinator for `record` on the jobs' arbiter.
    fn coordinate(
        &self,
        record: Record,
        rows: Vec<JobHost>,
        ready: Option<oneshot::Sender<Result<(), Failure>>>,
        taken_over: bool,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let id = record.info.id.clone();
        self.shared.running().insert(id.clone(), tx);
        let shared = self.shared.clone();
        self.arbiter.spawn_fn(move || {
            actix::spawn(async move {
                let coordinator = Coordinator::new(shared.clone(), record, rows, taken_over);
                let end = coordinator.run(rx, ready).await;
                shared.running().remove(&id);
                if let End::Finished = end {
                    let _ = shared
                        .store
                        .release(LEASES, id.as_str(), &shared.holder)
                        .await;
                    let _ = shared.store.delete(CANCELS, id.as_str()).await;
                }
            });
        });
    }

    /// A job and a page of its hosts.
    pub async fn get(&self, query: &JobQuery) -> Result<JobDetail, Failure> {
        let info = self.info(&query.job).await?;
        let ledger = &self.shared.ledger;
        let rows = ledger
            .hosts(query.job.as_str())
            .await
            .map_err(unavailable)?;
        let matching = rows
            .iter()
            .filter_map(|(_, row)| record::host(row, None))
            .filter(|h| query.state.is_none_or(|s| s == h.state));
        let ceiling = if query.output {
            100
        } else {
            MAX_JOB_HOSTS_PAGE
        };
        let limit = query
            .limit
            .map_or(ceiling, |l| l.min(ceiling as u64) as usize);
        let offset = query.offset.unwrap_or(0);
        let mut total = 0u64;
        let mut hosts = Vec::new();
        for host in matching {
            if total >= offset && hosts.len() < limit {
                hosts.push(host);
            }
            total += 1;
        }
        if query.output {
            for host in &mut hosts {
                if let Ok(Some((row, output))) = ledger.host(query.job.as_str(), &host.host).await {
                    if let Some(whole) = record::host(&row, output.as_deref()) {
                        *host = whole;
                    }
                }
            }
        }
        Ok(JobDetail {
            job: info,
            hosts,
            total,
            offset,
        })
    }

    /// `get`, once the job is no longer running or `wait` is up.
    pub async fn wait(&self, query: &JobQuery, wait: Duration) -> Result<JobDetail, Failure> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let info = self.info(&query.job).await?;
            if info.state != JobState::Running || tokio::time::Instant::now() >= deadline {
                return self.get(query).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The latest jobs, newest first.
    pub async fn list(&self, query: &JobsQuery) -> Result<JobsPage, Failure> {
        let limit = query
            .limit
            .map_or(50, |l| l.min(MAX_JOBS_PAGE as u64) as usize);
        let records = self
            .shared
            .ledger
            .jobs(query.before_ms, limit)
            .await
            .map_err(unavailable)?;
        let jobs = records
            .iter()
            .filter_map(|bytes| Record::decode(bytes).ok())
            .map(|r| r.info)
            .collect();
        Ok(JobsPage { jobs })
    }

    /// Cancels a job: at once if this replica coordinates it, through the
    /// store otherwise.
    pub async fn cancel(&self, job: &JobId, by: &str) -> Result<JobInfo, Failure> {
        let info = self.info(job).await?;
        if info.state != JobState::Running {
            return Ok(info);
        }
        self.shared
            .store
            .put(CANCELS, job.as_str(), by.as_bytes().to_vec())
            .await
            .map_err(unavailable)?;
        let local = self.shared.running().get(job).cloned();
        if let Some(tx) = local {
            let _ = tx
                .send(Command::Cancel {
                    by: Some(by.to_owned()),
                })
                .await;
        }
        tracing::info!(target: "audit", %job, %by, "job cancel asked");
        self.info(job).await
    }

    /// One host's row with its output.
    pub async fn output(&self, host: &HostRef) -> Result<JobHost, Failure> {
        let stored = self
            .shared
            .ledger
            .host(host.job.as_str(), &host.host)
            .await
            .map_err(unavailable)?;
        stored
            .and_then(|(row, output)| record::host(&row, output.as_deref()))
            .ok_or_else(|| {
                Failure::new(
                    Reason::NotFound,
                    format!("job {} has no host {:?}", host.job, host.host),
                )
            })
    }

    async fn info(&self, job: &JobId) -> Result<JobInfo, Failure> {
        let bytes = self
            .shared
            .ledger
            .job(job.as_str())
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Failure::new(Reason::NotFound, format!("there is no job {job}")))?;
        Record::decode(&bytes).map(|r| r.info).map_err(|e| {
            Failure::new(
                Reason::Failed,
                format!("job {job}'s record cannot be read: {e}"),
            )
        })
    }

    /// Takes over job `id` if nobody coordinates it.
    async fn adopt(&self, id: &str) -> Result<(), StoreError> {
        let Ok(job) = id.parse::<JobId>() else {
            return Ok(());
        };
        if self.shared.running().contains_key(&job) {
            return Ok(());
        }
        let shared = &self.shared;
        if !shared
            .store
            .acquire(LEASES, id, &shared.holder, shared.settings.lease_ttl)
            .await?
        {
            return Ok(());
        }
        let Some(bytes) = shared.ledger.job(id).await? else {
            return Ok(());
        };
        let Ok(record) = Record::decode(&bytes) else {
            tracing::warn!(job = %id, "an active job's record cannot be read; it is left alone");
            return Ok(());
        };
        let rows: Vec<JobHost> = shared
            .ledger
            .hosts(id)
            .await?
            .iter()
            .filter_map(|(_, row)| record::host(row, None))
            .collect();
        let unfinished = rows.iter().filter(|r| !r.state.is_final()).count();
        tracing::info!(job = %id, unfinished, "taking the job over");
        self.coordinate(record, rows, None, true);
        Ok(())
    }
}

/// Takes over the active jobs nobody coordinates, and prunes old ones.
async fn janitor(jobs: Arc<Jobs>) {
    let mut tick = tokio::time::interval(JANITOR);
    let mut pruned = None::<tokio::time::Instant>;
    loop {
        tick.tick().await;
        match jobs.shared.ledger.active().await {
            Ok(active) => {
                for id in active {
                    if let Err(e) = jobs.adopt(&id).await {
                        tracing::warn!(job = %id, error = %e, "cannot take the job over now");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot list the active jobs now"),
        }
        if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3_600)) {
            pruned = Some(tokio::time::Instant::now());
            let before = now_ms().saturating_sub(jobs.shared.settings.retention.as_millis() as u64);
            match jobs.shared.ledger.prune(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(jobs = n, "old jobs pruned"),
                Err(e) => tracing::debug!(error = %e, "cannot prune old jobs now"),
            }
        }
    }
}

fn unavailable(e: StoreError) -> Failure {
    Failure::new(Reason::Unavailable, e.to_string())
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

"""Grading on a Dask cluster: the workers of an existing scheduler (lab machines over SSH, a Slurm or
PBS cluster through dask-jobqueue, Kubernetes), or a ``LocalCluster`` started here (``local:N``).

The workers see hidden tests and students' code: put the scheduler and its workers on a private
network, and use TLS (``tls://`` addresses, with the ``c.Cluster.tls_*`` settings here and Dask's
``--tls-ca-file``/``--tls-cert``/``--tls-key`` on the scheduler and workers). Every worker needs this
package at the driver's version (a job checks it) and, to be confined, bubblewrap; start each with
one thread (``dask worker ADDRESS --nthreads 1 --nworkers N``) and, for a GPU, ``--resources GPU=1``.
"""

import concurrent.futures
import os
from pathlib import Path

from distributed import Client, LocalCluster
from distributed.security import Security
from traitlets import List, Unicode
from traitlets.config import Configurable

from attention_course.grading.nbgrader_steps import course_config
from attention_course.grading.notebook_job import ClassBundle, NotebookJob, grade_job
from attention_course.grading.workers import Workers
from attention_course.grading.zygote import start_shared_zygote

GPU = "GPU"  # the Dask worker resource a GPU worker declares: dask worker ADDRESS --resources GPU=1


class Cluster(Configurable):
    """Where ``attention-course grade`` sends its jobs (``c.Cluster.scheduler = "tls://..."`` in
    ``nbgrader_config.py``; ``--scheduler`` overrides it)."""

    scheduler = Unicode("", help="A Dask scheduler's address (tcp://host:8786, tls://host:8786), or local:N for a "
                                 "LocalCluster of N worker processes here; empty: a pool of processes here").tag(config=True)
    tls_ca_file = Unicode("", help="The certificate authority of the cluster's TLS (Dask's tls_ca_file)").tag(config=True)
    tls_client_cert = Unicode("", help="This client's TLS certificate (Dask's tls_client_cert)").tag(config=True)
    tls_client_key = Unicode("", help="This client's TLS key (Dask's tls_client_key)").tag(config=True)
    gpu_assignments = List(Unicode(), help=f"Assignments whose jobs need a GPU worker (one that declares the resource "
                                           f"{GPU}=1)").tag(config=True)


def configured_cluster(root: Path) -> Cluster:
    """The ``c.Cluster`` settings of the course's ``nbgrader_config.py``."""
    return Cluster(config=course_config(root))


class DaskWorkers(Workers):
    """The workers of a Dask cluster: an existing scheduler's, or a ``LocalCluster`` started here."""

    def __init__(self, scheduler: str, cluster: Cluster | None = None):
        cluster = cluster or Cluster()
        self.gpu_assignments = set(cluster.gpu_assignments)
        self._local = None
        if scheduler.startswith("local:"):
            # One thread per worker process: a job changes its process's working directory (nbgrader's converters).
            self._local = LocalCluster(n_workers=int(scheduler.removeprefix("local:")), threads_per_worker=1, processes=True,
                                       dashboard_address=None)
            self._client = Client(self._local)
        else:
            security = Security(tls_ca_file=cluster.tls_ca_file, tls_client_cert=cluster.tls_client_cert,
                                tls_client_key=cluster.tls_client_key, require_encryption=True) if cluster.tls_ca_file else None
            self._client = Client(scheduler, security=security)
        workers = self._client.scheduler_info()["workers"]
        self.count = len(workers)
        # Each worker's zygote imports while nbgrader registers the assignment (kept, or Dask cancels them).
        self._warming = [self._client.submit(start_shared_zygote, workers=[address], pure=False) for address in workers]
        self._executor = self._client.get_executor()
        self._bundles: dict[str, object] = {}

    def submit_job(self, bundle: ClassBundle, job: NotebookJob) -> concurrent.futures.Future:
        if bundle.digest not in self._bundles:  # sent to the cluster once, not with every job
            self._bundles[bundle.digest] = self._client.scatter(bundle, broadcast=True)
        needs = {"resources": {GPU: 1}} if bundle.assignment in self.gpu_assignments else {}
        return self._executor.submit(grade_job, self._bundles[bundle.digest], job, key=f"grade-{job.key(bundle)}", **needs)

    def worker_processes(self) -> list[int]:
        """The pids of the cluster's worker processes (for tests that kill one)."""
        return list(self._client.run(os.getpid).values())

    def close(self) -> None:
        self._client.close()
        if self._local is not None:
            self._local.close()

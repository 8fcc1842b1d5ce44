"""What the screening service stores: batches of studies, model results,
radiologists' reviews and the audit trail.

Results, reviews and audit events are append-only: a re-run with another model
adds a result, a second opinion adds a review, and nothing that was shown to a
person is ever overwritten.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ml.serving.decode import dicom_date


class TimeStamped(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated"))

    class Meta:
        abstract = True


class Batch(TimeStamped):
    """One submission: a single file, many files, a zip or a folder."""

    class Source(models.TextChoices):
        WEB = "web", _("Web form")
        API = "api", _("API")
        CLI = "cli", _("Command line")
        DICOM = "dicom", _("DICOM network (C-STORE)")
        DICOMWEB = "dicomweb", _("DICOMweb (STOW-RS)")

    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="batches", verbose_name=_("submitted by")
    )

    class Kind(models.TextChoices):
        CLINICAL = "clinical", _("Clinical")
        VALIDATION = "validation", _("Site validation")

    source = models.CharField(max_length=8, choices=Source.choices, verbose_name=_("source"))
    # A site validation's labelled films are scored like any batch but are not patients
    # waiting for a read: they never reach a worklist, an export, FHIR or PACS.
    kind = models.CharField(
        max_length=10, choices=Kind.choices, default=Kind.CLINICAL, db_default=Kind.CLINICAL, verbose_name=_("kind")
    )
    name = models.CharField(
        max_length=255, blank=True, help_text=_("Zip or folder name, when there was one."), verbose_name=_("name")
    )
    files_received = models.PositiveIntegerField(default=0, verbose_name=_("files received"))
    # Per-file outcomes at upload that have no study row: refusals ("error")
    # and notes such as an in-batch duplicate ("note"). [{"file": ..., "error"|"note": ...}]
    upload_report = models.JSONField(default=list, blank=True, verbose_name=_("upload report"))

    class Meta:
        verbose_name = _("batch")
        verbose_name_plural = _("batches")
        indexes = [
            # Serves a submitter's own batch list, newest first.
            models.Index(fields=["submitted_by", "-created_at"], name="batch_by_submitter_idx"),
        ]

    def __str__(self) -> str:
        return gettext("Batch %(id)s") % {"id": self.pk}


class StudyStatus(models.TextChoices):
    RECEIVED = "RECEIVED", _("Received")  # stored; message not yet confirmed on the queue
    QUEUED = "QUEUED", _("Queued")
    RUNNING = "RUNNING", _("Running")
    DONE = "DONE", _("Done")
    FAILED = "FAILED", _("Failed")  # could not be read or scored
    REJECTED = "REJECTED", _("Rejected")  # readable, but not an image we may score


class Population(models.TextChoices):
    """Whether the patient is inside the population the model was validated on (``ml.serving.population``)."""

    VALIDATED = "validated", _("Validated population")
    OUTSIDE = "outside", _("Outside validated population")


class DeclaredPopulation(models.TextChoices):
    NOT_DECLARED = "", _("Not declared")
    PEDIATRIC = "pediatric", _("Children in the validated age range")
    ADULT = "adult", _("Adults")


class ModelLabel(models.TextChoices):
    NORMAL = "NORMAL", _("Normal")
    PNEUMONIA = "PNEUMONIA", _("Pneumonia")


class Priority(models.TextChoices):
    """How soon a study must be scored: urgent work overtakes routine work already queued (``screening.queue``)."""

    URGENT = "urgent", _("Urgent")
    ROUTINE = "routine", _("Routine")


class ReviewStatus(models.TextChoices):
    UNREVIEWED = "unreviewed", _("Not reviewed")
    REVIEWED = "reviewed", _("Reviewed")
    SECOND_READ = "second_read", _("Needs second read")


# DICOM header keyword -> Study column. Never PatientName or PatientID: the service does not keep them.
DICOM_COLUMNS = {
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "AccessionNumber": "accession_number",
    "Modality": "modality",
    "ViewPosition": "view_position",
    "BodyPartExamined": "body_part",
    "PatientAge": "patient_age",
    "PatientSex": "patient_sex",
    "Manufacturer": "manufacturer",
}


class Study(TimeStamped):
    """One image file, from upload to its model result."""

    Status = StudyStatus
    ReviewStatus = ReviewStatus
    Priority = Priority
    Population = Population
    DeclaredPopulation = DeclaredPopulation

    UNFINISHED = (Status.RECEIVED, Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.DONE, Status.FAILED, Status.REJECTED)

    class Format(models.TextChoices):
        JPEG = "jpeg", "JPEG"
        PNG = "png", "PNG"
        DICOM = "dicom", "DICOM"

    batch = models.ForeignKey(Batch, on_delete=models.PROTECT, related_name="studies", verbose_name=_("batch"))
    file = models.FileField(max_length=255, verbose_name=_("file"))
    original_name = models.CharField(max_length=255, verbose_name=_("original file name"))
    sha256 = models.CharField(max_length=64, verbose_name=_("SHA-256"))
    size_bytes = models.PositiveBigIntegerField(verbose_name=_("size (bytes)"))
    format = models.CharField(max_length=8, choices=Format.choices, verbose_name=_("format"))
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED, verbose_name=_("status"))
    priority = models.CharField(
        max_length=8, choices=Priority.choices, default=Priority.ROUTINE, verbose_name=_("priority")
    )
    status_message = models.TextField(
        blank=True, help_text=_("Why the study failed or was rejected."), verbose_name=_("status message")
    )
    attempts = models.PositiveSmallIntegerField(default=0, verbose_name=_("attempts"))
    # "host:pid" of the worker process that claimed the study while RUNNING; with that
    # process's heartbeat, the sweep knows within seconds when a claim's owner has died.
    claimed_by = models.CharField(max_length=128, blank=True, verbose_name=_("claimed by"))
    # Set by ``manage.py purge``: the original file (patient data) is gone; results and reviews stay.
    file_purged_at = models.DateTimeField(null=True, blank=True, verbose_name=_("original removed"))
    duplicate_of = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="duplicates",
        help_text=_("An earlier study of the same file whose result this one shows."),
        verbose_name=_("duplicate of"),
    )
    queued_at = models.DateTimeField(null=True, blank=True, verbose_name=_("queued"))
    started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("started"))
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name=_("finished"))

    # Copied from the latest result and review when they are written, so the
    # worklist sorts and filters 10,000 studies with one indexed query.
    score = models.FloatField(
        null=True, blank=True, help_text=_("Latest model probability of pneumonia."), verbose_name=_("score")
    )
    model_label = models.CharField(max_length=10, choices=ModelLabel.choices, blank=True, verbose_name=_("model label"))
    review_status = models.CharField(
        max_length=12, choices=ReviewStatus.choices, default=ReviewStatus.UNREVIEWED, verbose_name=_("review status")
    )
    reviewed_at = models.DateTimeField(null=True, blank=True, verbose_name=_("reviewed"))
    # Copied from the latest result: the worklist keeps "outside" studies out of its main lane.
    population = models.CharField(max_length=10, choices=Population.choices, blank=True, verbose_name=_("population"))
    population_reason = models.TextField(blank=True, verbose_name=_("population reason"))

    # What the submitter said about the patient, for the population verdict.
    declared_population = models.CharField(
        max_length=10, choices=DeclaredPopulation.choices, blank=True, verbose_name=_("declared population")
    )
    declared_age_years = models.FloatField(null=True, blank=True, verbose_name=_("declared age (years)"))

    # ``ml.serving.fingerprint`` of the model input, for site-validation cases: a training image is found by it.
    fingerprint = models.CharField(max_length=64, blank=True, verbose_name=_("image fingerprint"))
    image_width = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("image width"))
    image_height = models.PositiveIntegerField(null=True, blank=True, verbose_name=_("image height"))
    # DICOM attributes, when the file had them. No patient name or id is kept.
    study_instance_uid = models.CharField(max_length=64, blank=True, verbose_name=_("Study Instance UID"))
    accession_number = models.CharField(max_length=64, blank=True, verbose_name=_("accession number"))
    series_instance_uid = models.CharField(max_length=64, blank=True, verbose_name=_("Series Instance UID"))
    sop_instance_uid = models.CharField(max_length=64, blank=True, verbose_name=_("SOP Instance UID"))
    study_date = models.DateField(null=True, blank=True, verbose_name=_("study date"))
    modality = models.CharField(max_length=16, blank=True, verbose_name=_("modality"))
    view_position = models.CharField(max_length=16, blank=True, verbose_name=_("view position"))
    body_part = models.CharField(max_length=64, blank=True, verbose_name=_("body part"))
    patient_age = models.CharField(max_length=8, blank=True, verbose_name=_("patient age (DICOM)"))
    # For a site validation's subgroups (and an auditor's questions): M, F or O, and the device's maker.
    patient_sex = models.CharField(max_length=16, blank=True, verbose_name=_("patient sex (DICOM)"))
    manufacturer = models.CharField(max_length=64, blank=True, verbose_name=_("device manufacturer (DICOM)"))

    class Meta:
        verbose_name = _("study")
        verbose_name_plural = _("studies")
        permissions = [
            ("submit_studies", "Can submit studies"),
            ("view_all_studies", "Can see every study, not only their own"),
            ("review_study", "Can review studies"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["batch", "sha256"], name="study_unique_file_per_batch"),
            models.CheckConstraint(condition=Q(size_bytes__gt=0), name="study_size_positive"),
            models.CheckConstraint(condition=Q(status__in=StudyStatus.values), name="study_status_valid"),
        ]
        indexes = [
            # Serves the "already scored in an earlier batch?" look-up at upload.
            models.Index(fields=["sha256", "status"], name="study_sha256_idx"),
            # Serves batch progress counts.
            models.Index(fields=["batch", "status"], name="study_batch_status_idx"),
            # Serves the radiologists' worklist: scored studies by review state, highest score first.
            models.Index(fields=["status", "review_status", "-score", "id"], name="study_worklist_idx"),
        ]

    def __str__(self) -> str:
        return gettext("Study %(id)s") % {"id": self.pk}

    def record_dicom_header(self, attributes: dict[str, str]) -> None:
        """Copy the header values the service keeps (``DICOM_COLUMNS`` and StudyDate); absent ones change nothing.

        Called at intake for instances received over the network and again
        when any DICOM file is decoded for scoring.
        """
        for keyword, column in DICOM_COLUMNS.items():
            value = str(attributes.get(keyword, "") or "").strip()
            if value:
                setattr(self, column, value[: self._meta.get_field(column).max_length])
        self.study_date = dicom_date(str(attributes.get("StudyDate", "") or "")) or self.study_date

    def latest_result(self) -> Result | None:
        """The newest result of this study, or of the earlier study it duplicates.

        Uses prefetched ``results`` when the caller prefetched them.
        """
        source = self.duplicate_of if self.duplicate_of_id else self
        results = list(source.results.all())
        return max(results, key=lambda r: (r.created_at, r.pk)) if results else None


class Result(TimeStamped):
    """What one model version said about one study."""

    Label = ModelLabel

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="results", verbose_name=_("study"))
    model_version = models.CharField(max_length=64, verbose_name=_("model version"))
    probability = models.FloatField(help_text=_("Calibrated probability of pneumonia."), verbose_name=_("probability"))
    label = models.CharField(max_length=10, choices=Label.choices, verbose_name=_("label"))
    threshold = models.FloatField(
        help_text=_("The operating threshold that set the label: the site's adopted one, else the model card's."),
        verbose_name=_("threshold"),
    )
    viral_probability = models.FloatField(
        null=True, blank=True, help_text=_("P(viral | pneumonia)."), verbose_name=_("viral probability")
    )
    inference_ms = models.FloatField(
        help_text=_("Gate and model time per study in its chunk (they run side by side), milliseconds."),
        verbose_name=_("inference (ms)"),
    )
    heatmap = models.FileField(
        max_length=255,
        blank=True,
        help_text=_("Grad-CAM overlay (RGBA PNG) of results scored before overlays were rendered on first view."),
        verbose_name=_("heatmap overlay"),
    )
    heatmap_raw = models.JSONField(
        null=True,
        blank=True,
        help_text=_("Grad-CAM map on the model's feature grid, 0..1."),
        verbose_name=_("raw heatmap"),
    )
    salient_box = models.JSONField(
        null=True,
        blank=True,
        help_text=_("[x0, y0, x1, y1] image fractions around the most salient region, above threshold."),
        verbose_name=_("salient box"),
    )
    evidence_outside_lungs = models.FloatField(
        null=True,
        blank=True,
        help_text=_(
            "Share of the model's evidence (the raw map) outside the lung fields; the map shown is weighted "
            "by the lung fields. Empty for models without a lung-field head."
        ),
        verbose_name=_("evidence outside the lungs"),
    )
    site_probability = models.FloatField(
        null=True,
        blank=True,
        help_text=_("P(pneumonia) shifted to the site's adopted prevalence, when one is adopted (shown to readers)."),
        verbose_name=_("site probability"),
    )
    site_setting = models.ForeignKey(
        "SiteSetting",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="results",
        help_text=_("The site's adopted operating point that set the label and probability; empty: the model card's."),
        verbose_name=_("site operating point"),
    )
    population = models.CharField(max_length=10, choices=Population.choices, blank=True, verbose_name=_("population"))
    population_reason = models.TextField(blank=True, verbose_name=_("population reason"))
    population_source = models.CharField(
        max_length=20,
        blank=True,
        help_text=_("Which signal decided: DICOM age, declaration or image check."),
        verbose_name=_("population decided by"),
    )
    adult_probability = models.FloatField(
        null=True,
        blank=True,
        help_text=_("The image-based population check's P(adult), when it ran."),
        verbose_name=_("adult probability"),
    )
    population_check_version = models.CharField(max_length=32, blank=True, verbose_name=_("population check version"))

    class Meta:
        verbose_name = _("model result")
        verbose_name_plural = _("model results")
        constraints = [
            # A task that runs twice cannot add a second result.
            models.UniqueConstraint(fields=["study", "model_version"], name="result_unique_per_study_model"),
            models.CheckConstraint(
                condition=Q(probability__gte=0) & Q(probability__lte=1), name="result_probability_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label} {self.probability:.3f} ({self.model_version})"

    @property
    def has_heatmap(self) -> bool:
        """A map to draw (its overlay PNG is rendered when first viewed, ``screening.intake.previews``)."""
        return self.heatmap_raw is not None or bool(self.heatmap)


class ReceivedInstance(models.Model):
    """A DICOM instance that arrived over the network (C-STORE or STOW-RS).

    One row per SOP Instance UID, ever: a sender that did not hear our answer
    sends the instance again, and the unique key turns the resend into a
    success that adds nothing.
    """

    sop_instance_uid = models.CharField(max_length=64, unique=True, verbose_name=_("SOP Instance UID"))
    study = models.OneToOneField(
        Study, on_delete=models.PROTECT, related_name="received_instance", verbose_name=_("study")
    )
    calling_ae = models.CharField(
        max_length=16, blank=True, help_text=_("The sender's AE title (C-STORE)."), verbose_name=_("calling AE title")
    )
    peer = models.CharField(
        max_length=64, blank=True, help_text=_("The sender's address."), verbose_name=_("sender address")
    )
    received_at = models.DateTimeField(auto_now_add=True, verbose_name=_("received"))

    class Meta:
        verbose_name = _("received DICOM instance")
        verbose_name_plural = _("received DICOM instances")

    def __str__(self) -> str:
        return self.sop_instance_uid


class Delivery(TimeStamped):
    """One result object (the structured report or the heatmap capture) for one DICOM destination.

    The row is the outbox: it is written with the result, and the beat's
    sweep sends every pending row whose time has come, so a destination that
    is down for hours gets the object when it is back, and a lost message
    costs only a delay. The object's UIDs derive from the source instance and
    the model version, so sending twice files one instance.
    """

    class Kind(models.TextChoices):
        REPORT = "sr", _("Structured report")
        HEATMAP = "sc", _("Heatmap (secondary capture)")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Failed")

    result = models.ForeignKey(Result, on_delete=models.PROTECT, related_name="deliveries", verbose_name=_("result"))
    destination = models.CharField(max_length=200, help_text=_("AE@host:port"), verbose_name=_("destination"))
    kind = models.CharField(max_length=2, choices=Kind.choices, verbose_name=_("kind"))
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, verbose_name=_("status"))
    attempts = models.PositiveIntegerField(default=0, verbose_name=_("attempts"))
    next_attempt_at = models.DateTimeField(null=True, blank=True, verbose_name=_("next attempt"))
    last_error = models.TextField(blank=True, verbose_name=_("last error"))
    dimse_status = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("The destination's last answer."), verbose_name=_("DIMSE status")
    )
    sop_instance_uid = models.CharField(max_length=64, blank=True, verbose_name=_("SOP Instance UID"))
    sent_at = models.DateTimeField(null=True, blank=True, verbose_name=_("sent"))

    class Meta:
        verbose_name = _("DICOM delivery")
        verbose_name_plural = _("DICOM deliveries")
        constraints = [
            models.UniqueConstraint(fields=["result", "destination", "kind"], name="delivery_unique_per_destination"),
        ]
        indexes = [
            # Serves the sweep's "pending and due" look-up.
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of result {self.result_id} to {self.destination}: {self.status}"

    @property
    def dimse_status_hex(self) -> str:
        return "" if self.dimse_status is None else f"0x{self.dimse_status:04X}"


class Review(TimeStamped):
    """A radiologist's reading of a study. Append-only: the latest one counts."""

    class Finding(models.TextChoices):
        NORMAL = "normal", _("Normal")
        PNEUMONIA = "pneumonia", _("Pneumonia")
        OTHER = "other", _("Other finding")
        UNREADABLE = "unreadable", _("Unreadable")

    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="reviews", verbose_name=_("study"))
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="reviews", verbose_name=_("reviewer")
    )
    result = models.ForeignKey(
        Result,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        help_text=_("The model result the reviewer saw."),
        verbose_name=_("result"),
    )
    agrees_with_model = models.BooleanField(null=True, verbose_name=_("agrees with the model"))
    finding = models.CharField(max_length=12, choices=Finding.choices, verbose_name=_("finding"))
    comment = models.TextField(blank=True, verbose_name=_("comment"))
    needs_second_read = models.BooleanField(default=False, verbose_name=_("needs a second read"))

    class Meta:
        verbose_name = _("review")
        verbose_name_plural = _("reviews")
        indexes = [models.Index(fields=["study", "-created_at"], name="review_latest_per_study_idx")]

    def __str__(self) -> str:
        return f"{self.study_id}: {self.get_finding_display()}"


class AuditEvent(models.Model):
    """Who did what to which object, and when. Append-only."""

    class Action(models.TextChoices):
        LOGIN = "login", _("Logged in")
        LOGOUT = "logout", _("Logged out")
        LOGIN_FAILED = "login_failed", _("Failed login")
        SUBMIT = "submit", _("Submitted a batch")
        TOKEN_CREATED = "token_created", _("Created an API token")
        STUDY_VIEWED = "study_viewed", _("Viewed a study")
        REVIEW_SAVED = "review_saved", _("Saved a review")
        EXPORT = "export", _("Exported data")
        RERUN = "rerun", _("Re-ran inference")
        SITE_VALIDATION = "site_validation", _("Started a site validation")
        SITE_ADOPTED = "site_adopted", _("Adopted a site operating point")
        PURGE = "purge", _("Removed original files past the retention period")
        ADMIN_CHANGE = "admin_change", _("Changed data in the admin")
        MONITORING_ALERT = "monitoring_alert", _("A monitored figure left its band")
        MONITORING_CLEARED = "monitoring_cleared", _("A monitored figure returned to its band")
        ORPHANS_REMOVED = "orphans_removed", _("Removed stored files that no study refers to")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True, verbose_name=_("created"))
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="audit_events",
        verbose_name=_("user"),
    )
    # Kept as written at the time, so the trail reads the same after a rename.
    actor_username = models.CharField(max_length=150, blank=True, verbose_name=_("user name at the time"))
    action = models.CharField(max_length=20, choices=Action.choices, verbose_name=_("action"))
    object_type = models.CharField(max_length=40, blank=True, verbose_name=_("object type"))
    object_id = models.CharField(max_length=40, blank=True, verbose_name=_("object id"))
    details = models.JSONField(default=dict, blank=True, verbose_name=_("details"))

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        indexes = [
            # Serves "everything that happened to this object" in the admin.
            models.Index(fields=["object_type", "object_id"], name="audit_object_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_username or '-'} {self.action}"


class ApiToken(models.Model):
    """A per-user API key. Only its SHA-256 is stored; the key is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens", verbose_name=_("user")
    )
    key_hash = models.CharField(max_length=64, unique=True, verbose_name=_("key hash"))
    prefix = models.CharField(
        max_length=8, help_text=_("First characters of the key, to tell tokens apart."), verbose_name=_("prefix")
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created"))
    last_used_at = models.DateTimeField(null=True, blank=True, verbose_name=_("last used"))
    # Requests in the current minute, for API_RATE_LIMIT_PER_MINUTE (a fixed window per token).
    window_started_at = models.DateTimeField(null=True, blank=True, verbose_name=_("rate window started"))
    window_requests = models.PositiveIntegerField(default=0, verbose_name=_("requests in the window"))

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class SiteValidation(TimeStamped):
    """A hospital measuring the served model on its own labelled studies before relying on it.

    Its cases run through the normal queue (or are studies already reviewed);
    the report is computed once every case is finished and kept, so what an
    administrator adopted from can always be read again.
    """

    class Source(models.TextChoices):
        LABELLED_FILES = "files", _("Labelled files (NORMAL/ and PNEUMONIA/ folders)")
        REVIEWED = "reviewed", _("Studies already reviewed by radiologists")

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("created by")
    )
    source = models.CharField(max_length=10, choices=Source.choices, verbose_name=_("source"))
    name = models.CharField(max_length=255, blank=True, verbose_name=_("name"))
    model_version = models.CharField(max_length=64, verbose_name=_("model version"))
    batch = models.ForeignKey(
        Batch, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("batch")
    )
    report = models.JSONField(
        null=True, blank=True, help_text=_("Computed once every case is finished."), verbose_name=_("report")
    )

    class Meta:
        verbose_name = _("site validation")
        verbose_name_plural = _("site validations")
        permissions = [("validate_site", "Can run site validations and adopt site operating points")]

    def __str__(self) -> str:
        return f"Site validation {self.pk} ({self.model_version})"


class SiteValidationCase(models.Model):
    """One labelled study of a site validation."""

    validation = models.ForeignKey(
        SiteValidation, on_delete=models.CASCADE, related_name="cases", verbose_name=_("site validation")
    )
    study = models.ForeignKey(Study, on_delete=models.PROTECT, related_name="+", verbose_name=_("study"))
    pneumonia = models.BooleanField(
        help_text=_("The site's label: True for pneumonia."), verbose_name=_("pneumonia (site label)")
    )

    class Meta:
        verbose_name = _("site validation case")
        verbose_name_plural = _("site validation cases")
        constraints = [
            models.UniqueConstraint(fields=["validation", "study"], name="site_case_unique_study"),
        ]

    def __str__(self) -> str:
        return f"{self.validation_id}/{self.study_id}"


class SiteSetting(models.Model):
    """An operating point a site adopted from one of its validations. Append-only: the newest one counts.

    ``threshold`` is on the model card's probability scale (the one the report
    measured). ``prevalence``, when set, shifts shown probabilities to the
    site's prior (the card's are calibrated to its validation split's).
    """

    validation = models.ForeignKey(
        SiteValidation, on_delete=models.PROTECT, related_name="settings", verbose_name=_("site validation")
    )
    model_version = models.CharField(max_length=64, verbose_name=_("model version"))
    target_sensitivity = models.FloatField(verbose_name=_("target sensitivity"))
    threshold = models.FloatField(verbose_name=_("threshold"))
    prevalence = models.FloatField(null=True, blank=True, verbose_name=_("prevalence"))
    adopted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", verbose_name=_("adopted by")
    )
    created_at = models.DateTimeField(auto_now_add=True, verbose_name=_("created"))

    class Meta:
        verbose_name = _("site operating point")
        verbose_name_plural = _("site operating points")
        indexes = [
            # Serves "the setting in force for the served model" on every scored chunk and page.
            models.Index(fields=["model_version", "-created_at"], name="site_setting_current_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gte=0) & Q(threshold__lte=1), name="site_threshold_range"),
            models.CheckConstraint(
                condition=Q(prevalence__isnull=True) | (Q(prevalence__gt=0) & Q(prevalence__lt=1)),
                name="site_prevalence_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_version}: threshold {self.threshold:.3f} (sensitivity {self.target_sensitivity:.2f})"


class WorkerHeartbeat(models.Model):
    """The last sign of life of each worker (``celery@host``) and worker process (``host:pid``).

    Workers record one when they run the beat's heartbeat task, which proves
    the whole path at once (beat scheduled it, the broker carried it, a worker
    ran it); each pool process records its own every few seconds from a
    thread, which tells the sweep that a RUNNING claim's owner is dead.
    Readiness and the metrics read their age.
    """

    hostname = models.CharField(max_length=255, unique=True, verbose_name=_("host name"))
    seen_at = models.DateTimeField(verbose_name=_("last seen"))
    # A pool process whose model, gate and population check are loaded and warmed: it can score.
    # Readiness needs one; a worker whose pool processes are all dead or still warming is not ready.
    warm = models.BooleanField(default=False, db_default=False, verbose_name=_("warm"))

    class Meta:
        verbose_name = _("worker heartbeat")
        verbose_name_plural = _("worker heartbeats")

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%Y-%m-%d %H:%M:%S}"


class ServiceCounter(models.Model):
    """A count of something the service did in the background (files removed, pool processes lost), for /metrics.

    Kept in the database, like everything ``/metrics`` reports, so every web
    process answers the same and a count survives restarts; incremented with an
    ``F()`` update (``screening.counters``), never read-modify-write.
    """

    name = models.CharField(max_length=64, unique=True, verbose_name=_("name"))
    value = models.BigIntegerField(default=0, verbose_name=_("value"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated"))

    class Meta:
        verbose_name = _("service counter")
        verbose_name_plural = _("service counters")

    def __str__(self) -> str:
        return f"{self.name} = {self.value}"


class ServiceState(models.Model):
    """Small facts the service remembers between runs, e.g. which broker instance it last saw."""

    key = models.CharField(max_length=64, unique=True, verbose_name=_("key"))
    value = models.CharField(max_length=255, verbose_name=_("value"))
    updated_at = models.DateTimeField(auto_now=True, verbose_name=_("updated"))

    class Meta:
        verbose_name = _("service state")
        verbose_name_plural = _("service states")

    def __str__(self) -> str:
        return self.key

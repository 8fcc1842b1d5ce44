"""Django admin: where auditors answer "who submitted, what did the model
say, who reviewed, what did they decide". Model results, reviews and audit
events are evidence, so they are read-only here."""

from django.contrib import admin, messages
from django.utils.formats import number_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from screening import audit
from screening.dicom import outbox
from screening.governance import site_validation
from screening.models import (
    ApiToken,
    AuditEvent,
    Batch,
    Delivery,
    ReceivedInstance,
    Result,
    Review,
    SiteSetting,
    SiteValidation,
    Study,
)
from screening.rerun import rerun_with_current_model
from screening.served_model import current_model_version
from screening.web import exports


@admin.action(description=_("Export selected studies as CSV"), permissions=["view"])
def export_studies_csv(modeladmin, request, queryset):
    audit.record(AuditEvent.Action.EXPORT, actor=request.user, what="admin studies", count=queryset.count())
    return exports.csv_response(queryset.order_by("pk"), "studies.csv")


@admin.action(description=_("Re-run inference with the current model"), permissions=["rerun"])
def rerun_inference(modeladmin, request, queryset):
    outcome = rerun_with_current_model(queryset, request.user)
    version = current_model_version()
    if outcome.queued:
        modeladmin.message_user(
            request,
            ngettext(
                "%(n)d study queued for the current model %(v)s.",
                "%(n)d studies queued for the current model %(v)s.",
                len(outcome.queued),
            )
            % {"n": len(outcome.queued), "v": version},
            messages.SUCCESS,
        )
    if outcome.same_model:
        modeladmin.message_user(
            request,
            _("Refused for %(n)d studies: model %(v)s already scored them; a re-run would change nothing.")
            % {"n": len(outcome.same_model), "v": version},
            messages.WARNING,
        )
    if outcome.purged:
        modeladmin.message_user(
            request,
            _("Skipped %(n)d studies whose original was removed under the retention policy.")
            % {"n": len(outcome.purged)},
            messages.WARNING,
        )
    if outcome.not_finished:
        modeladmin.message_user(
            request,
            _("Skipped %(n)d studies that are still being processed.") % {"n": len(outcome.not_finished)},
            messages.WARNING,
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class StudyInline(admin.TabularInline):
    model = Study
    fields = ("id", "original_name", "status", "status_message")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.action(description=_("Send results to the DICOM destinations"), permissions=["resend"])
def send_results_to_pacs(modeladmin, request, queryset):
    """For DICOM studies scored before a destination was configured (or added)."""
    results = [r.pk for r in (s.latest_result() for s in queryset.prefetch_related("results")) if r is not None]
    planned = outbox.plan(results)
    audit.record(AuditEvent.Action.ADMIN_CHANGE, actor=request.user, what="dicom send results", deliveries=planned)
    modeladmin.message_user(
        request,
        _("%(n)d deliveries queued (DICOM studies only; results already sent are not sent twice).") % {"n": planned},
        messages.SUCCESS if planned else messages.WARNING,
    )


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "submitted_by", "kind", "source", "name", "files_received")
    list_filter = ("kind", "source", "created_at")
    search_fields = ("name", "submitted_by__username")
    date_hierarchy = "created_at"
    list_select_related = ("submitted_by",)
    readonly_fields = (
        "submitted_by",
        "kind",
        "source",
        "files_received",
        "upload_report",
        "created_at",
        "updated_at",
    )
    inlines = [StudyInline]


class ResultInline(admin.TabularInline):
    model = Result
    fields = (
        "model_version",
        "probability",
        "label",
        "threshold",
        "viral_probability",
        "evidence_outside_lungs",
        "population",
        "population_reason",
        "created_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


class ReviewInline(ResultInline):
    model = Review
    fields = ("reviewer", "finding", "agrees_with_model", "needs_second_read", "comment", "created_at")
    readonly_fields = fields


@admin.register(Study)
class StudyAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "batch",
        "original_name",
        "format",
        "status",
        "score_shown",
        "model_label",
        "population",
        "review_status",
        "created_at",
    )
    list_filter = ("status", "review_status", "model_label", "population", "format", "modality", "created_at")
    search_fields = ("original_name", "sha256", "accession_number", "study_instance_uid", "sop_instance_uid")
    date_hierarchy = "created_at"
    list_select_related = ("batch",)
    readonly_fields = [f.name for f in Study._meta.fields]
    inlines = [ResultInline, ReviewInline]
    actions = [export_studies_csv, rerun_inference, send_results_to_pacs]

    def has_add_permission(self, request):
        return False

    def has_rerun_permission(self, request):
        return request.user.is_superuser

    def has_resend_permission(self, request):
        return request.user.is_superuser

    @admin.display(description=_("score"), ordering="score")
    def score_shown(self, obj):
        return _three_places(obj.score)


def _three_places(value: float | None) -> str:
    """A probability as a list shows it (the change page keeps every digit)."""
    return "-" if value is None else number_format(value, 3)


@admin.register(Result)
class ResultAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "study",
        "model_version",
        "probability_shown",
        "label",
        "threshold",
        "site_setting",
        "population",
        "created_at",
    )
    list_filter = ("label", "model_version", "population", "population_source", "created_at")
    search_fields = ("study__original_name", "model_version")
    date_hierarchy = "created_at"
    list_select_related = ("study", "site_setting")

    @admin.display(description=_("probability"), ordering="probability")
    def probability_shown(self, obj):
        return _three_places(obj.probability)


@admin.action(description=_("Send again to the DICOM destination"), permissions=["resend"])
def send_again(modeladmin, request, queryset):
    count = outbox.send_again(queryset)
    audit.record(AuditEvent.Action.ADMIN_CHANGE, actor=request.user, what="dicom send again", deliveries=count)
    modeladmin.message_user(
        request,
        ngettext("%(n)d delivery queued to be sent again.", "%(n)d deliveries queued to be sent again.", count)
        % {"n": count},
        messages.SUCCESS,
    )


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    """What went back to PACS: each result object, each destination, each answer."""

    list_display = ("id", "result", "kind", "destination", "status", "dimse_status_hex", "attempts", "sent_at")
    list_filter = ("status", "kind", "destination", "created_at")
    search_fields = ("destination", "sop_instance_uid", "result__study__accession_number")
    date_hierarchy = "created_at"
    list_select_related = ("result",)
    actions = [send_again]

    def has_resend_permission(self, request):
        return request.user.is_superuser

    @admin.display(description=_("DIMSE status"), ordering="dimse_status")
    def dimse_status_hex(self, obj):
        return obj.dimse_status_hex


@admin.register(ReceivedInstance)
class ReceivedInstanceAdmin(ReadOnlyAdmin):
    list_display = ("sop_instance_uid", "study", "calling_ae", "peer", "received_at")
    list_filter = ("calling_ae", "received_at")
    search_fields = ("sop_instance_uid", "calling_ae", "peer")
    list_select_related = ("study",)


@admin.register(SiteValidation)
class SiteValidationAdmin(ReadOnlyAdmin):
    """Reports are created and adopted from the site validation pages; here they are audited."""

    list_display = ("id", "created_at", "created_by", "source", "name", "model_version", "auc", "verdict")
    list_filter = ("source", "model_version", "created_at")
    search_fields = ("name", "created_by__username")
    list_select_related = ("created_by",)
    readonly_fields = ("created_by", "source", "name", "model_version", "batch", "report", "created_at", "updated_at")

    @admin.display(description=_("AUC"))
    def auc(self, obj):
        return None if not obj.report or obj.report.get("auc") is None else round(obj.report["auc"], 4)

    @admin.display(description=_("Verdict"))
    def verdict(self, obj):
        return site_validation.verdict_label(obj.report)


@admin.register(SiteSetting)
class SiteSettingAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "model_version", "threshold", "target_sensitivity", "prevalence", "adopted_by")
    list_filter = ("model_version", "created_at")
    list_select_related = ("adopted_by",)


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    list_display = ("id", "study", "reviewer", "finding", "agrees_with_model", "needs_second_read", "created_at")
    list_filter = ("finding", "agrees_with_model", "needs_second_read", "created_at")
    search_fields = ("study__original_name", "reviewer__username", "comment")
    date_hierarchy = "created_at"
    list_select_related = ("study", "reviewer")


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor_username", "action", "object_type", "object_id")
    list_filter = ("action", "object_type", "created_at")
    search_fields = ("actor_username", "object_id")
    date_hierarchy = "created_at"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "created_at", "last_used_at")
    list_filter = ("created_at", "last_used_at")
    search_fields = ("user__username", "prefix")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # tokens are created with `manage.py create_api_token`, which shows the key once

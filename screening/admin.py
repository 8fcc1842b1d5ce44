"""Django admin: where auditors answer "who submitted, what did the model
say, who reviewed, what did they decide". Model results, reviews and audit
events are evidence, so they are read-only here."""

from django.contrib import admin

from screening.models import ApiToken, AuditEvent, Batch, Result, Review, Study


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


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "submitted_by", "source", "name", "files_received")
    list_filter = ("source", "created_at")
    search_fields = ("name", "submitted_by__username")
    date_hierarchy = "created_at"
    list_select_related = ("submitted_by",)
    readonly_fields = ("submitted_by", "source", "files_received", "upload_report", "created_at", "updated_at")
    inlines = [StudyInline]


class ResultInline(admin.TabularInline):
    model = Result
    fields = ("model_version", "probability", "label", "threshold", "viral_probability", "created_at")
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
    list_display = ("id", "batch", "original_name", "format", "status", "modality", "accession_number", "created_at")
    list_filter = ("status", "format", "modality", "created_at")
    search_fields = ("original_name", "sha256", "accession_number", "study_instance_uid")
    date_hierarchy = "created_at"
    list_select_related = ("batch",)
    readonly_fields = [f.name for f in Study._meta.fields]
    inlines = [ResultInline, ReviewInline]

    def has_add_permission(self, request):
        return False


@admin.register(Result)
class ResultAdmin(ReadOnlyAdmin):
    list_display = ("id", "study", "model_version", "probability", "label", "threshold", "created_at")
    list_filter = ("label", "model_version", "created_at")
    search_fields = ("study__original_name", "model_version")
    date_hierarchy = "created_at"
    list_select_related = ("study",)


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
    search_fields = ("user__username", "prefix")
    list_select_related = ("user",)
    readonly_fields = ("user", "prefix", "key_hash", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # tokens are created with `manage.py create_api_token`, which shows the key once

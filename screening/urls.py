from django.urls import path

from screening.api import dicomweb, interop, v1
from screening.governance import site_views
from screening.web import system_views, views

app_name = "screening"

urlpatterns = [
    path("", views.home, name="home"),
    path("batches/", views.batch_list, name="batch_list"),
    path("batches/new/", views.batch_new, name="batch_new"),
    path("batches/<int:batch_id>/", views.batch_detail, name="batch_detail"),
    path("batches/<int:batch_id>/export.csv", views.batch_export, name="batch_export"),
    path("worklist/", views.worklist, name="worklist"),
    path("worklist/export.csv", views.worklist_export, name="worklist_export"),
    path("studies/<int:study_id>/", views.study_detail, name="study_detail"),
    path("studies/<int:study_id>/image.png", views.study_image, name="study_image"),
    path("studies/<int:study_id>/heatmap.png", views.study_heatmap, name="study_heatmap"),
    path("site-validation/", site_views.site_validation_list, name="site_validation_list"),
    path("site-validation/<int:validation_id>/", site_views.site_validation_detail, name="site_validation_detail"),
    path("site-validation/<int:validation_id>/adopt/", site_views.site_validation_adopt, name="site_validation_adopt"),
    path("site-validation/<int:validation_id>/report.pdf", site_views.site_validation_pdf, name="site_validation_pdf"),
    path("metrics", system_views.metrics, name="metrics"),
    path("system/", system_views.system, name="system"),
    path("monitoring/", system_views.monitoring_page, name="monitoring"),
    path("api/v1/studies", v1.submit_study, name="api_submit_study"),
    path("dicomweb/studies", dicomweb.store_instances, name="dicomweb_store"),
    path("api/v1/batches", v1.submit_batch, name="api_submit_batch"),
    path("api/v1/batches/<int:batch_id>", v1.batch_detail, name="api_batch_detail"),
    path("api/v1/studies/<int:study_id>", v1.study_detail, name="api_study_detail"),
    path("api/v1/studies/<int:study_id>/report.dcm", interop.report_dcm, name="api_study_report_dcm"),
    path("api/v1/studies/<int:study_id>/overlay.dcm", interop.overlay_dcm, name="api_study_overlay_dcm"),
    path("api/v1/studies/<int:study_id>/fhir", interop.fhir_report, name="api_study_fhir"),
]

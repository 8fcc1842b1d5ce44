from django import forms
from django.utils.translation import gettext_lazy as _


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files (Django's documented recipe)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_empty_file", True)  # refused per file by screening.intake, with the others kept
        kwargs.setdefault(
            "widget", MultipleFileInput(attrs={"accept": ".jpg,.jpeg,.png,.dcm,.dicom,.zip,application/dicom,image/*"})
        )
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else []


class UploadForm(forms.Form):
    files = MultipleFileField(
        label=_("X-ray files"),
        help_text=_("One or more JPEG, PNG or DICOM files, or a .zip of them."),
    )

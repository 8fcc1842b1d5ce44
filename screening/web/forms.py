from django import forms
from django.utils.translation import gettext_lazy as _

from screening import reasons
from screening.models import DeclaredPopulation, Priority
from screening.population import Declaration, InvalidDeclaration


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files (Django's documented recipe)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault(
            "allow_empty_file", True
        )  # refused per file by screening.intake.acceptance, with the others kept
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
    population = forms.ChoiceField(
        label=_("Patients"),
        choices=DeclaredPopulation.choices,
        required=False,
        help_text=_("Who the patients of this batch are, if you know. Adults are outside the validated population."),
    )
    age = forms.CharField(
        label=_("Age in years"),
        required=False,
        max_length=16,
        help_text=_("Optional: the patients' age, when one age holds for the whole batch."),
    )
    priority = forms.ChoiceField(
        label=_("Priority"),
        choices=Priority.choices,
        initial=Priority.ROUTINE,
        required=False,  # clients that predate it send none: routine
        help_text=_("Urgent studies are scored before routine work already waiting."),
    )

    def clean(self):
        cleaned = super().clean()
        cleaned["priority"] = cleaned.get("priority") or Priority.ROUTINE
        try:
            cleaned["declaration"] = Declaration.parse(cleaned.get("population"), cleaned.get("age"))
        except InvalidDeclaration as exc:
            self.add_error("age" if cleaned.get("age") else "population", reasons.status_message(str(exc)))
        return cleaned


class SiteValidationForm(forms.Form):
    archive = forms.FileField(
        label=_("Labelled files (.zip)"),
        required=False,
        help_text=_("A zip with NORMAL/ and PNEUMONIA/ folders of JPEG, PNG or DICOM files."),
    )
    use_reviewed = forms.BooleanField(
        label=_("Use the studies our radiologists have already reviewed (their finding is the label)"),
        required=False,
    )

    def clean(self):
        cleaned = super().clean()
        if bool(cleaned.get("archive")) == bool(cleaned.get("use_reviewed")):
            raise forms.ValidationError(_("Choose either a zip of labelled files or the reviewed studies."))
        return cleaned


class AdoptForm(forms.Form):
    target_sensitivity = forms.FloatField(
        label=_("Target sensitivity"),
        min_value=0.5,
        max_value=1.0,
        initial=0.95,
        help_text=_("The threshold is set to the highest one reaching this sensitivity on the report's cases."),
    )
    prevalence = forms.FloatField(
        label=_("Site prevalence of pneumonia (optional)"),
        min_value=0.01,
        max_value=0.99,
        required=False,
        help_text=_("Shown probabilities are re-expressed for this share of pneumonia among the site's studies."),
    )

"""The three roles, as Django groups with permissions.

Permissions are granted only through these groups. A data migration calls
``sync_role_groups``; a later change of a role's permissions ships as a new
migration that calls it again.
"""

from __future__ import annotations

SUBMITTER = "Submitter"
RADIOLOGIST = "Radiologist"
AUDITOR = "Auditor"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    SUBMITTER: ["screening.submit_studies"],
    RADIOLOGIST: ["screening.view_all_studies", "screening.review_study"],
    AUDITOR: [
        "screening.view_all_studies",
        "screening.view_batch",
        "screening.view_study",
        "screening.view_result",
        "screening.view_review",
        "screening.view_auditevent",
        "screening.view_sitevalidation",
        "screening.view_sitesetting",
        "screening.view_delivery",
        "screening.view_receivedinstance",
    ],
}


def sync_role_groups(group_model, permission_model, *, strict: bool = True) -> None:
    """Make each role group hold exactly its permissions (models may be historical).

    A data migration runs before later migrations have created every model,
    so it passes ``strict=False`` and permissions that do not exist yet are
    skipped; ``post_migrate`` then runs it strictly, which completes the groups
    and fails loudly on a misspelt permission.
    """
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = group_model.objects.get_or_create(name=role)
        permissions = []
        for name in names:
            app_label, codename = name.split(".")
            found = permission_model.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if found is None and strict:
                raise LookupError(f"role {role}: no permission {name}")
            if found is not None:
                permissions.append(found)
        group.permissions.set(permissions)

"""The example payloads of the four seed guides (/work/shared/seeds/), as each platform's producer would post
them to relay. Copied from the guides; where a guide's example is not valid JSON (``...`` placeholders, a
trailing comma, ``//`` comments) the smallest edit that makes it JSON is noted next to it.
"""

from __future__ import annotations

import copy
from typing import Any

# -- ExpressConsent (000_5f11d5833c4faac4.txt), "Example payload": verbatim (the guide's first copy of it
# carries // comments; this second copy is plain JSON). Posted as the data of a "snapshot.created" event.
EXPRESSCONSENT_SNAPSHOT: dict[str, Any] = {
    "transactionId": "xyzzy-12345",
    "domain": "example.com",
    "downloadURL": "https://storage.googleapis.com/your-bucket/path/snapshot-1686233200-12345.png",
    "createdAt": "2023-06-08T14:06:40.000Z",
    "ip": "198.51.100.23",
    "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)...",
    "anuraData": {"result": "good", "adblocker": False},
    "customMetadata": {"phoneNumber": "555-123-4567", "formName": "lead-generation"},
    "leadValidationId": "pkg_abcd1234",
    "subGroupIds": ["group1", "group2"],
}

# -- ConsentProof (001_3865bfd2ca447d0c.txt), "consent.created payload": verbatim. The producer posts the whole
# object; relay's ingest takes exactly these four fields, so the receiver gets the same object back.
CONSENTPROOF_CONSENT_CREATED: dict[str, Any] = {
    "id": "evt_xyz789",
    "type": "consent.created",
    "created_at": "2024-01-15T10:35:00Z",
    "data": {
        "id": "con_abc123",
        "subject_id": "user_123",
        "subject_email": "user@example.com",
        "policy_id": "pol_def456",
        "consent_type": "marketing",
        "granted": True,
        "consent_hash": "sha256:a1b2c3d4e5f6...",
        "metadata": {"ip_address": "192.168.1.1", "source": "signup_form"},
        "recorded_at": "2024-01-15T10:35:00Z",
    },
}
CONSENTPROOF_TYPES = (
    "consent.created",
    "consent.updated",
    "consent.withdrawn",
    "consent.batch_created",
    "policy.created",
    "policy.updated",
    "policy.deleted",
)


def consentproof_events() -> list[dict[str, Any]]:
    """One event of each of the guide's seven types. The guide shows only consent.created's payload; the others
    reuse its fields (the guide does not show their data)."""
    consent = CONSENTPROOF_CONSENT_CREATED["data"]
    policy = {"id": "pol_def456", "name": "Marketing consent", "version": 2, "updated_at": "2024-01-15T11:00:00Z"}
    data: dict[str, Any] = {
        "consent.created": consent,
        "consent.updated": {**consent, "consent_type": "analytics", "recorded_at": "2024-01-15T10:40:00Z"},
        "consent.withdrawn": {**consent, "granted": False, "recorded_at": "2024-01-15T10:45:00Z"},
        "consent.batch_created": {"count": 2, "consents": [consent, {**consent, "id": "con_abc124"}]},
        "policy.created": {**policy, "version": 1},
        "policy.updated": policy,
        "policy.deleted": {"id": "pol_def456"},
    }
    events = [copy.deepcopy(CONSENTPROOF_CONSENT_CREATED)]
    for number, event_type in enumerate(CONSENTPROOF_TYPES[1:], start=1):
        events.append(
            {
                "id": f"evt_xyz{789 + number}",
                "type": event_type,
                "created_at": f"2024-01-15T10:{35 + number}:00Z",
                "data": copy.deepcopy(data[event_type]),
            }
        )
    return events


# -- Didomi (002_398cd73e5e6395d3.txt). Posted as the event's data: {"type": T, "data": <this object>}.
# "user.updated" example: the guide's "..." placeholders left out.
DIDOMI_USER_UPDATED: dict[str, Any] = {
    "type": "user.updated",
    "parameters": {
        "source": {"id": "unique_event_id", "created_at": "2019-08-07T10:45:11Z"},
        "old_entity": {"id": "didomi_user_id", "organization_user_id": "organization_user_id"},
        "new_entity": {"id": "didomi_user_id", "organization_user_id": "organization_user_id"},
    },
}
# "event.deleted" example: "..." left out, and the trailing comma after "entity" removed.
DIDOMI_EVENT_DELETED: dict[str, Any] = {
    "type": "event.deleted",
    "parameters": {"entity": {"id": "deleted_event_id", "created_at": "2019-08-07T10:45:11Z"}},
}
# "event.created (original)", verbatim (the address is as the published page shows it).
DIDOMI_EVENT_CREATED: dict[str, Any] = {
    "type": "event.created",
    "parameters": {
        "entity": {
            "organization_id": "didomi",
            "user": {"id": "some_unique_id", "organization_user_id": "[email protected]"},
            "consents": {
                "purposes": [
                    {"id": "geo_location", "enabled": True},
                    {"id": "market_research", "enabled": True},
                ]
            },
        }
    },
}
# "event.created (Flattened)", verbatim from the guide: what Didomi itself sends with "Flatten request body".
DIDOMI_EVENT_CREATED_FLATTENED_BY_DIDOMI: dict[str, Any] = {
    "type": "event.created",
    "parameters__entity__organization_id": "didomi",
    "parameters__entity__user__id": "some_unique_id",
    "parameters__entity__user__organization_user_id": "[email protected]",
    "parameters__entity__consents__purposes__geolocation_data__enabled": True,
    "parameters__entity__consents__purposes__market_research__enabled": True,
}
# What relay's format = "data-flat" sends for DIDOMI_EVENT_CREATED: the same keys, except that array items are
# keyed by index (relay's one flattening rule, CONTRACT §6) where Didomi keys purposes by id.
DIDOMI_EVENT_CREATED_DATA_FLAT: dict[str, Any] = {
    "type": "event.created",
    "parameters__entity__organization_id": "didomi",
    "parameters__entity__user__id": "some_unique_id",
    "parameters__entity__user__organization_user_id": "[email protected]",
    "parameters__entity__consents__purposes__0__id": "geo_location",
    "parameters__entity__consents__purposes__0__enabled": True,
    "parameters__entity__consents__purposes__1__id": "market_research",
    "parameters__entity__consents__purposes__1__enabled": True,
}

# -- DataGuard (003_f9e15d9266e90dd2.txt), the message payload: verbatim, its placeholder "sentAt" included (relay
# replaces it at each attempt). Posted as the data of a "citizen.updated" event.
DATAGUARD_MESSAGE: dict[str, Any] = {
    "applicationId": "your-app-id",
    "citizenId": "DataGuard-id",
    "externalRef": "your-customer-ref",
    "permissions": [
        {
            "transactionId": "permission-transaction-id",
            "optionType": "option/group",
            "optionId": "option-id",
            "justification": "lawful-basis",
            "state": "STATE",
            "channel": "channel-txn-received-via",
            "campaign": "attributed-campaign-id",
            "privacyPolicyId": "privacy-policy-id-in-DataGuard",
            "privacyPolicyRef": "reference-of-above",
            "permissionStatementId": "permission-statement-id-in-DataGuard",
            "permissionStatementRef": "reference-of-above",
            "recordedBy": "id-of-who-recorded-txn",
            "recordedByName": "name-of-above",
            "recordedClient": "system/client-id",
            "recordedClientName": "system/client-name",
            "delegatedAuthorityId": "id-of-delegate-who-recorded-txn",
            "delegatedAuthorityName": "name-of-delegate-who-recorded-txn",
            "recordedAt": "iso-timestamp",
            "obtainedAt": "iso-timestamp",
            "validFrom": "iso-timestamp",
            "validUntil": "iso-timestamp",
        }
    ],
    "preferences": [
        {
            "preference": "ref-of-preference",
            "choices": [{"reference": "ref-of-choice-made", "label": "human-readable-label-of-choice"}],
            "label": "display-label-of-preference",
            "submissionId": "preference-submission-id",
            "updatedAt": "iso-timestamp",
        }
    ],
    "sentAt": "iso-timestamp",
}

"""`manage.py demo`: a demo organization whose first sync shows every kind of error Resync handles.

Idempotent: run it again and it converges on the same rows (keyed on slugs and names) without duplicates.
Sandbox records are seeded only into an object that is still empty, so records the syncs created or changed
are left alone. The data is literal, not random, so every newcomer sees the same errors.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts.models import Membership, Organization, Role
from integrations.crypto import CredentialsDecryptionError
from integrations.models import Connection, SandboxRecord
from mappings.models import ErrorStrategy, LoggingLevel, Mapping, ScheduleType, WriteMode
from syncs.schedules import mapping_schedule_sync

USERNAME = "demo"
PASSWORD = "resync-demo"

SHOP = "Web shop (sandbox)"
CRM = "CRM (sandbox)"

CONNECTIONS = {
    SHOP: {"credentials": {"api_key": "demo-shop-key"}, "config": {}},
    # A flaky, rate-limited target, reached over HTTP: every seventh call is a 429 (Retry-After 5 s), about one
    # in twelve a 503 or an answer that never comes (calls time out after 2 seconds). In-request retries heal
    # most of it; what is left is retried on the mapping's schedule.
    CRM: {
        "credentials": {"api_key": "demo-crm-key"},
        "config": {
            "faults": {"seed": 7, "rate_limit_every": 7, "retry_after": 5, "failure_rate": 0.08,
                       "failure_kind": ["503", "timeout"]},
            "timeout_seconds": 2,
        },
    },
}

CONTACT_FIELDS = ("email", "first_name", "last_name", "phone", "company", "city", "customer_number")
# None leaves the field out of the record altogether; "" is a field that is present but empty.
SHOP_CONTACTS = [
    ("olivia.bennett@example.com", "Olivia", "Bennett", "+14155550101", "Northwind Traders", "San Francisco", "C-1001"),
    ("liam.carter@example.com", "Liam", "Carter", "+12125550102", "Blue Harbor Logistics", "New York", "C-1002"),
    ("emma.diaz@example.org", "Emma", "Diaz", "+15035550103", "Cedar & Pine Furniture", "Portland", "C-1003"),
    ("noah.evans@example.net", "Noah", "Evans", "+16175550104", "Brightline Dental Group", "Boston", "C-1004"),
    ("ava.fischer@example.com", "Ava", "Fischer", "+16175550105", "Kestrel Analytics", "Cambridge", "C-1005"),
    ("lucas.gray@example.org", "Lucas", "Gray", "+13035550106", "Summit Roofing Co.", "Denver", "C-1006"),
    ("mia.hughes@example.com", "Mia", "Hughes", "+15125550107", "Greenleaf Organic Market", "Austin", "C-1007"),
    ("ethan.ito@example.net", "Ethan", "Ito", "+18435550108", "Harbor Point Marina", "Charleston", "C-1008"),
    ("sophia.jensen@example.com", "Sophia", "Jensen", "+13125550109", "Lumen Lighting Studio", "Chicago", "C-1009"),
    ("mason.khan@example.org", "Mason", "Khan", "+18025550110", "Maple Street Bakery", "Burlington", "C-1010"),
    ("isabella.lopez@example.com", "Isabella", "Lopez", "+17025550111", "Orchid Veterinary Clinic", "Reno", "C-1011"),
    ("james.morris@example.net", "James", "Morris", "+16025550112", "Pioneer Solar Installations", "Phoenix", "C-1012"),
    ("charlotte.nguyen@example.com", "Charlotte", "Nguyen", "+12075550113", "Quarry Hill Architects", "Bath", "C-1013"),
    ("benjamin.owens@example.org", "Benjamin", "Owens", "+17205550114", "Silverline Fitness", "Boulder", "C-1014"),
    ("amelia.patel@example.com", "Amelia", "Patel", "+17575550115", "Tidewater Plumbing & Heating", "Dover", "C-1015"),
    ("henry.quinn@example.net", "Henry", "Quinn", "+14155550116", "Union Square Books", "San Francisco", "C-1016"),
    ("harper.reed@example.com", "Harper", "Reed", "+19075550117", "Westwind Aviation Services", "Anchorage", "C-1017"),
    ("alexander.silva@example.org", "Alexander", "Silva", "+14135550118", "", "Springfield", "C-1018"),
    ("evelyn.turner@example.com", "Evelyn", "Turner", "+15415550119", "", "Eugene", "C-1019"),
    ("daniel.underwood@example.net", "Daniel", "Underwood", "+14155550120", "Northwind Traders", "Oakland", "C-1020"),
    ("abigail.vance@example.com", "Abigail", "Vance", "+12125550121", "Blue Harbor Logistics", "Brooklyn", "C-1021"),
    ("matthew.walsh@example.org", "Matthew", "Walsh", "+15035550122", "Cedar & Pine Furniture", "Salem", "C-1022"),
    ("emily.xu@example.com", "Emily", "Xu", "+16175550123", "Kestrel Analytics", "Somerville", "C-1023"),
    ("jack.young@example.net", "Jack", "Young", "+13035550124", "Summit Roofing Co.", "Aurora", "C-1024"),
    ("liz.zimmer@example.com", "Elizabeth", "Zimmer", "+15125550125", "Greenleaf Organic Market", "Waco", "C-1025"),
    ("david.kim@example.org", "David", "Kim", "+13125550126", "Lumen Lighting Studio", "Evanston", "C-1026"),
    ("sofia.alvarez@example.com", "Sofia", "Alvarez", "+17025550127", "", "Henderson", "C-1027"),
    ("owen.brooks@example.net", "Owen", "Brooks", "+16025550128", "Pioneer Solar Installations", "Tempe", "C-1028"),
    ("scarlett.chen@example.com", "Scarlett", "Chen", "+12075550129", "Quarry Hill Architects", "Bangor", "C-1029"),
    ("william.dunn@example.org", "William", "Dunn", "+17205550130", "Silverline Fitness", "Denver", "C-1030"),
    ("grace.ellis@example.com", "Grace", "Ellis", "+17575550131", "Tidewater Plumbing & Heating", "Hampton", "C-1031"),
    ("tom.baker@example.com", "Tom", "Baker", "+14155550133", "Union Square Books", "San Francisco", "C-1033"),
    ("chloe.foster@example.net", "Chloe", "Foster", "+19075550134", "Westwind Aviation Services", "Nome", "C-1034"),
    ("samuel.grant@example.com", "Samuel", "Grant", "+18435550135", "Harbor Point Marina", "Mount Pleasant", "C-1035"),
    ("victoria.hale@example.org", "Victoria", "Hale", "+18025550136", "Maple Street Bakery", "Montpelier", "C-1036"),
    ("joseph.irwin@example.com", "Joseph", "Irwin", "+15415550137", "", "Bend", "C-1037"),
    ("lily.james@example.net", "Lily", "James", "+14135550138", "", "Holyoke", "C-1038"),
    ("ryan.keller@example.com", "Ryan", "Keller", "+16175550139", "Brightline Dental Group", "Quincy", "C-1039"),
    ("zoe.lambert@example.org", "Zoe", "Lambert", "+13125550140", "Lumen Lighting Studio", "Oak Park", "C-1040"),
    ("nathan.moore@example.com", "Nathan", "Moore", "+12125550141", "Blue Harbor Logistics", "Jersey City", "C-1041"),
    ("hannah.novak@example.net", "Hannah", "Novak", "+15035550142", "Cedar & Pine Furniture", "Beaverton", "C-1042"),
    ("leo.ortiz@example.com", "Leo", "Ortiz", "+15125550143", "Greenleaf Organic Market", "San Marcos", "C-1043"),
    ("aria.price@example.org", "Aria", "Price", "+16025550144", "Pioneer Solar Installations", "Mesa", "C-1044"),
    ("caleb.ross@example.com", "Caleb", "Ross", "+17205550145", "Silverline Fitness", "Lakewood", "C-1045"),
    ("nora.stone@example.net", "Nora", "Stone", "+17025550146", "Orchid Veterinary Clinic", "Reno", "C-1046"),
    ("isaac.tran@example.com", "Isaac", "Tran", "+19075550147", "Westwind Aviation Services", "Juneau", "C-1047"),
    ("ella.webb@example.org", "Ella", "Webb", "+14155550148", "Northwind Traders", "Berkeley", "C-1048"),
    ("ruby.evans@example.com", "Ruby", "Evans", "", "Maple Street Bakery", "Burlington", "C-1049"),
    # The messy ones: each shows one kind of error or fix.
    ("jane@", "Jane", "Cooper", "+14155550150", "Kestrel Analytics", "Boston", "C-1050"),
    ("bob at example.com", "Bob", "Stone", "+12125550151", "", "New York", "C-1051"),
    ("priya.shah@example.com", "Priya", "Shah", "(415) 555-0132", "Union Square Books", "San Francisco", "C-1052"),
    ("oliver.wright@example.org", "Oliver", "Wright", "+44 20 7946 0958", "Ironbridge Engineering", "London", "C-1053"),
    ("george.hill@example.com", "George", "Hill", "415.555.0161", "", "Palo Alto", "C-1054"),
    ("kevin.murphy@example.net", "Kevin", "Murphy", "call me maybe", "", "Seattle", "C-1055"),
    ("lena.berg@example.com", "Lena", None, "+13035550155", "Summit Roofing Co.", "Denver", "C-1056"),
    (
        "max.montgomery@example.org",
        "Maximiliano Alexander Bartholomew Christoph Montgomery-Smyth",  # 60 characters
        "Montgomery",
        "+14155550156",
        "",
        "Sausalito",
        "C-1057",
    ),
    # The same person twice in the source: both want the same target record.
    ("sam.lee@example.com", "Sam", "Lee", "+16175550157", "Brightline Dental Group", "Boston", "C-1058"),
    ("sam.lee@example.com", "Samantha", "Lee", "+16175550158", "Kestrel Analytics", "Cambridge", "C-1059"),
    # Its lowercase twin already exists in the CRM; without a lowercase transform the match misses it.
    ("Maria.Garcia@Example.com ", "Maria", "Garcia", "+13125550159", "Lumen Lighting Studio", "Chicago", "C-1060"),
    # No email, nothing to match on: the mapping's filter ignores it, with its reason.
    ("", "Walk-in", "Customer", "", "", "Seattle", "C-1061"),
]

CRM_CONTACTS = [
    ("maria.garcia@example.com", "Maria", "Garcia", "+13125550159", "Lumen Lighting Studio", "Chicago", "C-1060"),
    ("david.kim@example.org", "David", "Kim", "+13125550199", "Lumen Lighting", "Chicago", "C-1026"),
    ("tom.baker@example.com", "Tom", "Baker", "+14155550133", "Union Square Books", "San Francisco", "C-1033"),
    ("li.wei@example.net", "Li", "Wei", "+12065550190", "Ironbridge Engineering", "Seattle", ""),
]

COMPANY_FIELDS = ("name", "domain", "phone", "industry", "employee_count")
SHOP_COMPANIES = [
    ("Northwind Traders", "northwind.example.com", "+14155550100", "Wholesale", 120),
    ("Blue Harbor Logistics", "blueharbor.example.com", "+1 (212) 555-0140", "Logistics", 340),
    ("Cedar & Pine Furniture", "cedarpine.example.com", "+1 503 555 0117", "Retail", 45),
    ("Brightline Dental Group", "brightline.example.com", "+16175550123", "Healthcare", 80),
    ("Kestrel Analytics", "Kestrel.Example.com", "+1 617.555.0199", "Software", 60),
    ("Summit Roofing Co.", " summitroofing.example.com ", "+13035550162", "Construction", 25),
    ("Greenleaf Organic Market", "greenleaf.example.com", "+15125550134", "Grocery", "lots"),
    ("Harbor Point Marina", "harborpoint.example.com", "+18435550178", "Leisure", 15),
    ("Ironbridge Engineering", "ironbridge.example.com", "+44 20 7946 0321", "Engineering", 210),
    ("Lumen Lighting Studio", "lumenlighting.example.com", "+13125550155", "Design", 12),
    (
        "The Consolidated International Holdings Company of Greater Springfield and the Surrounding Counties",
        "consolidated.example.com",
        "+14135550190",
        "Holding",
        1500,
    ),
    # No country code: auto-fix will not guess one, so this stays an error (with a hint).
    ("Maple Street Bakery", "maplebakery.example.com", "(802) 555-0111", "Food & beverage", 9),
    ("Orchid Veterinary Clinic", "orchidvet.example.com", "+17025550183", "Healthcare", 22),
    ("Pioneer Solar Installations", "pioneersolar.example.com", "+16025550146", "Energy", 75),
    ("Quarry Hill Architects", "quarryhill.example.com", "+12075550129", "Architecture", 18),
    (
        "Riverside Community Credit Union and Financial Advisory Services for Families and Small Businesses",
        "riversidecu.example.com",
        "+1 541-555-0172",
        "Finance",
        260,
    ),
    ("Silverline Fitness", "silverline.example.com", "+17205550114", "Fitness", 40),
    ("Tidewater Plumbing & Heating", "tidewater.example.com", "+1-757-555-0108", "Trades", 33),
    ("Union Square Books", "unionsquarebooks.example.com", "+14155550177", "Retail", 14),
    ("Westwind Aviation Services", "westwind.example.com", "+19075550161", "Aviation", 95),
]

CRM_COMPANIES = [
    ("Northwind Traders", "northwind.example.com", "+14155550100", "Wholesale", 110),
    ("Harbor Point Marina", "harborpoint.example.com", "+18435550178", "Leisure", 15),
    ("Acme Industrial Supply", "acmeindustrial.example.com", "+13135550120", "Manufacturing", 500),
]

# (connection, object, field names, rows, id prefix)
SANDBOX_DATA = [
    (SHOP, "contacts", CONTACT_FIELDS, SHOP_CONTACTS, "shop-contact"),
    (SHOP, "companies", COMPANY_FIELDS, SHOP_COMPANIES, "shop-company"),
    (CRM, "contacts", CONTACT_FIELDS, CRM_CONTACTS, "crm-contact"),
    (CRM, "companies", COMPANY_FIELDS, CRM_COMPANIES, "crm-company"),
]


def trim():
    return [{"name": "trim", "args": {}}]


DEMO_CHANNEL = "Demo team (email)"
DEMO_RULES = [
    ("Errors of every run", "every_error", "warning"),
    ("Credentials refused", "auth_error", "critical"),
]

MAPPINGS = [
    {
        "name": "Shop customers → CRM contacts",
        "source": (SHOP, "contacts"),
        "target": (CRM, "contacts"),
        "settings": {
            "match_keys": [{"source": "email", "target": "email"}],
            "write_mode": WriteMode.UPSERT,
            "error_strategy": ErrorStrategy.RETRY,
            "auto_fix": False,
            "logging_level": LoggingLevel.ERRORS,
            "default_phone_country": "US",
            "batch_size": 10,
            "schedule_type": ScheduleType.INTERVAL,
            "schedule_interval_minutes": 15,
            "filters": [{"field": "email", "op": "empty", "reason": "No email address: nothing to match on"}],
        },
        # (source field, target field, transforms, skip_invalid)
        "fields": [
            # Deliberately no lowercase: the case-different twin in the CRM surfaces as a duplicate error.
            ("email", "email", trim(), False),
            ("first_name", "first_name", trim(), False),
            ("last_name", "last_name", trim(), False),
            ("phone", "phone", [{"name": "phone_e164", "args": {}}], False),
            ("company", "company", trim(), False),
            ("city", "city", trim(), False),
            ("customer_number", "customer_number", [], False),
        ],
    },
    {
        "name": "Shop companies → CRM companies",
        "source": (SHOP, "companies"),
        "target": (CRM, "companies"),
        "settings": {
            "match_keys": [{"source": "domain", "target": "domain"}],
            "write_mode": WriteMode.UPSERT,
            "error_strategy": ErrorStrategy.SKIP,
            # Over-long names are truncated and punctuated phones cleaned, each fix recorded as a warning.
            "auto_fix": True,
            "logging_level": LoggingLevel.ALL,
            "default_phone_country": "US",
            "batch_size": 10,
            "schedule_type": ScheduleType.NONE,
            "schedule_interval_minutes": None,
            "filters": [],
        },
        "fields": [
            ("name", "name", trim(), False),
            ("domain", "domain", [*trim(), {"name": "lowercase", "args": {}}], False),
            ("phone", "phone", [], False),
            ("industry", "industry", [], False),
            ("employee_count", "employee_count", [], False),
        ],
    },
]


def as_records(field_names, rows):
    return [{name: value for name, value in zip(field_names, row, strict=True) if value is not None} for row in rows]


class Command(BaseCommand):
    help = "Create (or bring back) the demo organization, its sandbox systems, mappings and login."

    @transaction.atomic
    def handle(self, *args, **options):
        organization, created = Organization.objects.update_or_create(slug="demo", defaults={"name": "Demo Company"})
        self.report(f"Organization {organization.name} ({organization.slug})", created)

        user, created = get_user_model().objects.get_or_create(
            username=USERNAME, defaults={"email": "demo@example.com"}
        )
        # The password is reset every time, so the credentials printed below always work.
        user.is_staff = True
        user.is_superuser = True
        user.is_active = True
        user.set_password(PASSWORD)
        user.save()
        self.report(f"User {user.username} (staff, superuser)", created)
        _membership, created = Membership.objects.update_or_create(
            user=user, organization=organization, defaults={"role": Role.OWNER}
        )
        self.report(f"Membership of {user.username} in {organization.name} (owner)", created)

        connections = {name: self.ensure_connection(organization, name, spec) for name, spec in CONNECTIONS.items()}
        for connection_name, object_name, field_names, rows, id_prefix in SANDBOX_DATA:
            self.seed(connections[connection_name], object_name, as_records(field_names, rows), id_prefix)
        for spec in MAPPINGS:
            self.ensure_mapping(organization, connections, spec)
        self.ensure_notifications(organization)

        self.stdout.write(self.style.SUCCESS(f"Log in at http://127.0.0.1:8000/ as {USERNAME} / {PASSWORD}"))

    def ensure_notifications(self, organization):
        """An email channel to the demo user (in development the console backend prints what it sends, where
        `make run` shows it) and the two rules a team starts with: every run's errors, and any refused
        credentials. Through the services, as Settings → Notifications does; left as they are once there."""
        from notifications.models import Channel, ChannelKind, Rule
        from notifications.services import channel_create, rule_create

        channel = Channel.objects.for_org(organization).filter(name=DEMO_CHANNEL).first()
        self.report(f"Notification channel {DEMO_CHANNEL}", channel is None)
        if channel is None:
            channel, _no_secret = channel_create(organization=organization, name=DEMO_CHANNEL,
                                                 kind=ChannelKind.EMAIL, recipients=["demo@example.com"])
        for name, condition, level in DEMO_RULES:
            created = not Rule.objects.for_org(organization).filter(name=name).exists()
            if created:
                rule_create(organization=organization, name=name, condition=condition, level=level,
                            channels=[channel])
            self.report(f"Notification rule {name}", created)

    def report(self, what, created):
        self.stdout.write(f"{'Created' if created else 'Up to date'}: {what}")

    def ensure_connection(self, organization, name, spec):
        connection, created = Connection.objects.update_or_create(
            organization=organization, name=name, defaults={"provider": "sandbox", "config": spec["config"]}
        )
        try:
            current = connection.credentials
        except CredentialsDecryptionError:
            # Encrypted with a key that is gone (a fresh var/encryption.key): the demo simply sets them again.
            current = None
        if current != spec["credentials"]:
            # Compared first because every encryption yields a new ciphertext: rewriting would not converge.
            connection.credentials = spec["credentials"]
            connection.save(update_fields=["credentials_ciphertext", "updated_at"])
        self.report(f"Connection {name}", created)
        return connection

    def seed(self, connection, object_name, records, id_prefix):
        from integrations.connectors.sandbox import seed_records

        existing = SandboxRecord.objects.for_org(connection.organization).filter(
            connection=connection, object_name=object_name
        )
        count = existing.count()
        if count:
            self.stdout.write(f"Up to date: {connection.name} already has {count} {object_name}")
            return
        ids = [f"{id_prefix}-{number:03d}" for number in range(1, len(records) + 1)]
        seed_records(connection, object_name, records, ids=ids)
        self.stdout.write(f"Seeded: {len(records)} {object_name} into {connection.name}")

    def ensure_mapping(self, organization, connections, spec):
        (source_name, source_object), (target_name, target_object) = spec["source"], spec["target"]
        mapping, created = Mapping.objects.update_or_create(
            organization=organization,
            name=spec["name"],
            defaults={
                "source_connection": connections[source_name],
                "source_object": source_object,
                "target_connection": connections[target_name],
                "target_object": target_object,
                **spec["settings"],
            },
        )
        wanted = set()
        for position, (source_field, target_field, transforms, skip_invalid) in enumerate(spec["fields"]):
            mapping.field_mappings.update_or_create(
                target_field=target_field,
                defaults={
                    "organization": organization,
                    "source_field": source_field,
                    "transforms": transforms,
                    "reverse_transforms": [],
                    "required": False,
                    "default_value": None,
                    "skip_invalid": skip_invalid,
                    "position": position,
                },
            )
            wanted.add(target_field)
        # Field mappings added by hand since the last run go, so the demo mapping is the documented one.
        mapping.field_mappings.exclude(target_field__in=wanted).delete()
        mapping_schedule_sync(mapping=mapping)
        self.report(f"Mapping {mapping.name} with {len(wanted)} field mappings", created)

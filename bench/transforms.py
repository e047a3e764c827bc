"""The per-record cost of a compiled mapping plan, against the same transforms written by hand in the same run.

    .venv/bin/python bench/transforms.py [--records 20000] [--runs 5] [--skip-per-record-calls]

A contacts mapping of ten fields (trim, lowercase, truncate, default, value_map, email_normalize, date_format,
concat, digits_only, and a country code or a phone number) on records with phone numbers of several countries:
- floor: the ten transforms written directly in Python, with the checks this target needs (lengths, a whole
  number) and the same parsing helpers as the plan (normalize_email, compile_strptime, phonenumbers once): what
  a sync cannot do with less, so that the ratio is the plan's own overhead;
- plan: mappings.plan's compiled RecordPlan.apply (transforms, defaults, validation, problems as ConnectorErrors);
- per-record calls: apply_transforms per rule, then validate_payload, as syncs/engine.py prepared a record before
  the plan: what the engine saves by switching.
Prints the median CPU µs per record of each, and ratios against the floor. main() returns the figures as a dict.
"""

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

TARGETS_US = {"without phone_e164": 10.0, "with phone_e164": 30.0}
PHONE_REGIONS = ["US", "GB", "DE", "FR", "JP", "AU", "BR", "IN", "ES", "CA", "MX", "NL"]
GENDERS = {"F": "Female", "M": "Male"}


def spec(name, **args):
    return {"name": name, "args": args}


def contact_rules(*, phone):
    from mappings.plan import FieldRule

    rules = [
        FieldRule("email", "email", [spec("email_normalize")], required=True),
        FieldRule("first_name", "first_name", [spec("trim")]),
        FieldRule("website", "website", [spec("trim"), spec("lowercase")]),
        FieldRule("title", "title", [spec("truncate", length=30)]),
        FieldRule("lead_source", "lead_source", [spec("default", value="web")]),
        FieldRule("gender", "gender", [spec("value_map", map=GENDERS, fallback="$keep")]),
        FieldRule("birthday", "birthday", [spec("date_format", input="%d/%m/%Y", output="iso")]),
        FieldRule("", "full_name", [spec("concat", fields=["first_name", "last_name"])]),
        FieldRule("employees", "employees", [spec("digits_only")]),
    ]
    if phone:
        rules.append(FieldRule("phone", "phone", [spec("phone_e164")]))
    else:
        rules.append(FieldRule("country", "country", [spec("trim"), spec("uppercase")]))
    return rules


def contact_schema():
    from integrations.connectors.base import FieldSpec, FieldType, ObjectSchema

    fields = [
        FieldSpec("email", FieldType.EMAIL, required=True, max_length=80),
        FieldSpec("first_name", max_length=40),
        FieldSpec("website", FieldType.URL, max_length=100),
        FieldSpec("title", max_length=30),
        FieldSpec("lead_source", max_length=40),
        FieldSpec("gender", max_length=10),
        FieldSpec("birthday", FieldType.DATE),
        FieldSpec("full_name", max_length=80),
        FieldSpec("employees", FieldType.INTEGER),
        FieldSpec("phone", FieldType.PHONE, format="e164"),
        FieldSpec("country", max_length=2),
    ]
    return ObjectSchema("contact", {spec.name: spec for spec in fields}, label="Contact")


def phone_numbers():
    """Valid numbers of several countries, written as people type them: national for the mapping's US, else
    international."""
    import phonenumbers
    from phonenumbers import PhoneNumberFormat, PhoneNumberType

    numbers = []
    for region in PHONE_REGIONS:
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            number = phonenumbers.example_number_for_type(region, kind)
            style = PhoneNumberFormat.NATIONAL if region == "US" else PhoneNumberFormat.INTERNATIONAL
            numbers.append(phonenumbers.format_number(number, style))
    return numbers


def contact_records(count):
    phones = phone_numbers()
    return [
        {
            "email": f"  Ada.Lovelace{n}@Example{n % 7}.COM ",
            "first_name": f" Ada{n % 50} ",
            "last_name": "Lovelace",
            "website": f" HTTPS://Example.com/Ada{n} ",
            "title": "Countess of Lovelace and Analyst of Engines" if n % 2 else "Analyst",
            "lead_source": "" if n % 3 else "referral",
            "gender": "FMX"[n % 3],
            "birthday": f"{n % 28 + 1:02d}/{n % 12 + 1:02d}/18{n % 100:02d}",
            "employees": f"{n % 9 + 1},{n % 1000:03d}",
            "phone": phones[n % len(phones)],
            "country": " gb ",
        }
        for n in range(count)
    ]


def floor_function(*, phone):
    """The same mapping written by hand: transforms, then the checks the target needs."""
    import phonenumbers

    from mappings.transforms import compile_strptime, normalize_email

    parse, is_valid, format_number = phonenumbers.parse, phonenumbers.is_valid_number, phonenumbers.format_number
    e164 = phonenumbers.PhoneNumberFormat.E164
    non_digit = re.compile(r"[^0-9]")
    strptime = compile_strptime("%d/%m/%Y")

    def prepare(data):
        errors = []
        lead_source = data.get("lead_source")
        gender = data.get("gender")
        names = [part.strip() for part in (data.get("first_name"), data.get("last_name")) if part and part.strip()]
        payload = {
            "email": normalize_email(data["email"].strip().lower()),
            "first_name": data["first_name"].strip(),
            "website": data["website"].strip().lower(),
            "title": data["title"][:30],
            "lead_source": lead_source if lead_source and lead_source.strip() else "web",
            "gender": GENDERS.get(gender, gender),
            "birthday": strptime(data["birthday"].strip()).date().isoformat(),
            "full_name": " ".join(names) or None,
            "employees": non_digit.sub("", data["employees"]),
        }
        if phone:
            number = parse(data["phone"], "US")
            if not is_valid(number):
                errors.append("phone")
            payload["phone"] = format_number(number, e164)
        else:
            payload["country"] = data["country"].strip().upper()
            if len(payload["country"]) > 2:
                errors.append("country")
        for name, limit in (("email", 80), ("first_name", 40), ("website", 100), ("full_name", 80)):
            if len(payload[name]) > limit:
                errors.append(name)
        if not payload["employees"].isdigit():
            errors.append("employees")
        return payload, errors

    return prepare


def per_record_calls_function(*, rules, schema):
    """How syncs/engine.py prepared a record before the plan: apply_transforms per rule, then validate_payload."""
    from mappings.transforms import TransformContext, TransformError, apply_transforms
    from mappings.validation import validate_payload

    def prepare(data):
        payload, problems = {}, []
        context = TransformContext(record=data, phone_country="US")
        for rule in rules:
            value = data.get(rule.near_field) if rule.near_field else None
            try:
                payload[rule.far_field] = apply_transforms(value, rule.transforms, context=context)
            except TransformError as exc:
                problems.append(exc)
        if problems:
            return payload, problems
        result = validate_payload(
            payload, schema, auto_fix=True, phone_country="US",
            defaults={r.far_field: r.default for r in rules if r.default is not None},
            required_fields=[r.far_field for r in rules if r.required],
        )
        return result.payload, result.errors

    return prepare


def per_record_us(function, records):
    # CPU time of this process: on a shared machine, wall time also counts the time spent waiting for a core.
    started = time.process_time()
    for record in records:
        function(record)
    return (time.process_time() - started) / len(records) * 1e6


def parser_build():
    parser = argparse.ArgumentParser(prog="bench/transforms.py")
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-per-record-calls", action="store_true", help="skip the slow pre-plan path")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to OUT as JSON (bench/report.py)")
    return parser


def measure(argv=()):
    """Measure and print; return the figures ({"without phone_e164": {...}, "with phone_e164": {...}, ...}).
    argv are command-line options: a runner calling it gets the defaults whatever its own command line."""
    args = parser_build().parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["RESYNC_LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from mappings.plan import compile_record_plan

    records = contact_records(args.records)
    schema = contact_schema()
    variants = {}
    for label, phone in (("without phone_e164", False), ("with phone_e164", True)):
        rules = contact_rules(phone=phone)
        plan = compile_record_plan(rules=rules, schema=schema, phone_country="US", auto_fix=True)
        floor = floor_function(phone=phone)
        # Both must do the same work: the same payload for every record, no problem anywhere.
        for record in records:
            prepared = plan.apply(record)
            payload, errors = floor(record)
            assert prepared.ok and not prepared.warnings and not errors, (record, prepared.errors, errors)
            assert prepared.payload == payload, (prepared.payload, payload)
        variants[label] = {"floor": floor, "plan": plan.apply}
        if not args.skip_per_record_calls:
            variants[label]["per_record_calls"] = per_record_calls_function(rules=rules, schema=schema)

    # Every run measures every variant in turn, so that a change in the machine's load falls on all of them.
    timings = {(label, name): [] for label, functions in variants.items() for name in functions}
    load = os.getloadavg()[0]
    for _ in range(args.runs):
        for label, functions in variants.items():
            for name, function in functions.items():
                timings[label, name].append(per_record_us(function, records))
    load = max(load, os.getloadavg()[0])

    figures = {"records": args.records, "runs": args.runs, "load_average": round(load, 2)}
    print(f"{args.records} records, median of {args.runs} runs, CPU µs per record (load average up to {load:.2f})")
    for label in variants:
        floor_us = statistics.median(timings[label, "floor"])
        plan_us = statistics.median(timings[label, "plan"])
        target = TARGETS_US[label]
        row = {"floor_us": round(floor_us, 2), "plan_us": round(plan_us, 2), "plan_ratio": round(plan_us / floor_us, 2),
               "target_us": target, "meets_target": plan_us <= target}
        print(f"  {label}")
        print(f"    floor (hand-written)      {floor_us:7.2f} µs   1.00x")
        verdict = "meets" if row["meets_target"] else "MISSES"
        print(f"    compiled plan             {plan_us:7.2f} µs  {plan_us / floor_us:5.2f}x   "
              f"({verdict} the {target:.0f} µs target)")
        if (label, "per_record_calls") in timings:
            calls_us = statistics.median(timings[label, "per_record_calls"])
            row.update(per_record_calls_us=round(calls_us, 2), per_record_calls_ratio=round(calls_us / floor_us, 2))
            print(f"    per-record calls (before) {calls_us:7.2f} µs  {calls_us / floor_us:5.2f}x")
        figures[label] = row
    return figures


def figures(argv=None):
    """The figures in the shape of bench/report.py: µs per record, the plan's ratio to the hand-written floor."""
    from report import Figure

    measured = measure(argv or ())
    out = []
    for label in TARGETS_US:
        row = measured[label]
        out.append(Figure("transforms", f"floor: the transforms by hand, {label}", row["floor_us"], "µs/record"))
        out.append(Figure("transforms", f"compiled plan, {label}", row["plan_us"], "µs/record", baseline="floor",
                          ratio=row["plan_ratio"], target=f"≤ {row['target_us']:.0f} µs", holds=row["meets_target"]))
        if "per_record_calls_us" in row:
            out.append(Figure("transforms", f"per-record calls (before the plan), {label}", row["per_record_calls_us"],
                              "µs/record", baseline="floor", ratio=row["per_record_calls_ratio"]))
    return out


def main(argv=None):
    from report import print_table, write_json

    argv = sys.argv[1:] if argv is None else argv
    args = parser_build().parse_args(argv)
    rest = [arg for arg in argv if arg != args.json and arg != "--json"]
    found = figures(rest)
    print_table(found)
    if args.json:
        write_json(found, args.json)
    return found


if __name__ == "__main__":
    main()

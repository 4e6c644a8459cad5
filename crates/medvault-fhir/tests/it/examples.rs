//! Realistic (Synthea-style) example resources, one per supported type, shared by tests.

use serde_json::{json, Value};

pub fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "pat-1",
        "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05Z"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Patient</div>"},
        "extension": [{
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
            "valueCode": "F"
        }],
        "identifier": [
            {"system": "https://github.com/synthetichealth/synthea", "value": "7c2a1c3e"},
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "http://hospital.smarthealthit.org",
                "value": "MRN-0042"
            }
        ],
        "name": [{"use": "official", "family": "Núñez", "given": ["María", "José"], "prefix": ["Mrs."]}],
        "telecom": [{"system": "phone", "value": "555-123-4567", "use": "home"}],
        "gender": "female",
        "birthDate": "1984-02-29",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1984-02-29T10:15:00-05:00"}]},
        "deceasedBoolean": false,
        "address": [{"line": ["123 Main St"], "city": "Boston", "state": "MA", "postalCode": "02101", "country": "US"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}], "text": "M"},
        "multipleBirthBoolean": false,
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}}],
        "contact": [{"relationship": [{"text": "spouse"}], "name": {"family": "Smith"}, "gender": "male"}],
        "generalPractitioner": [{"reference": "Practitioner/prac-1"}],
        "managingOrganization": {"reference": "Organization/org-1"}
    })
}

pub fn practitioner() -> Value {
    json!({
        "resourceType": "Practitioner",
        "id": "prac-1",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9999999999"}],
        "active": true,
        "name": [{"family": "Müller", "given": ["Hans"], "prefix": ["Dr."]}],
        "telecom": [{"system": "email", "value": "x@example.org", "use": "work"}],
        "gender": "male",
        "qualification": [{"code": {"text": "MD"}, "period": {"start": "2001"}}]
    })
}

pub fn organization() -> Value {
    json!({
        "resourceType": "Organization",
        "id": "org-1",
        "identifier": [{"system": "https://github.com/synthetichealth/synthea", "value": "org-42"}],
        "active": true,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
        "name": "Boston General Hospital",
        "alias": ["BGH"],
        "telecom": [{"system": "phone", "value": "555-000-1111"}],
        "address": [{"city": "Boston", "state": "MA"}]
    })
}

pub fn encounter() -> Value {
    json!({
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "185349003", "display": "Encounter for check up"}]}],
        "subject": {"reference": "Patient/pat-1"},
        "participant": [{"individual": {"reference": "Practitioner/prac-1"}, "period": {"start": "2020-03-01T09:00:00Z", "end": "2020-03-01T09:30:00Z"}}],
        "period": {"start": "2020-03-01T09:00:00Z", "end": "2020-03-01T09:30:00Z"},
        "diagnosis": [{"condition": {"reference": "Condition/cond-1"}, "rank": 1}],
        "location": [{"location": {"reference": "urn:uuid:loc-1"}, "status": "completed"}],
        "serviceProvider": {"reference": "Organization/org-1"}
    })
}

pub fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}], "text": "Body Weight"},
        "subject": {"reference": "https://fhir.example.org/r4/Patient/pat-1"},
        "encounter": {"reference": "Encounter/enc-1"},
        "effectiveDateTime": "2020-03-01T09:10:00+01:00",
        "issued": "2020-03-01T09:10:00.123+01:00",
        "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "referenceRange": [{"low": {"value": 50, "unit": "kg"}, "text": "normal"}],
        "note": [{"authorString": "nurse", "text": "after breakfast"}]
    })
}

pub fn blood_pressure() -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectivePeriod": {"start": "2019-12-31", "end": "2020-01-02"},
        "component": [
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}, "valueQuantity": {"value": 120, "unit": "mm[Hg]"}},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]}, "valueQuantity": {"value": 80, "unit": "mm[Hg]"}}
        ]
    })
}

pub fn diagnostic_report() -> Value {
    json!({
        "resourceType": "DiagnosticReport",
        "id": "dr-1",
        "status": "final",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "LP29684-5"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "51990-0"}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": "2020-03-01",
        "issued": "2020-03-02T10:00:00Z",
        "result": [{"reference": "Observation/obs-1"}],
        "media": [{"link": {"reference": "Media/m1"}}],
        "presentedForm": [{"contentType": "text/plain", "data": "aGVsbG8="}]
    })
}

pub fn condition() -> Value {
    json!({
        "resourceType": "Condition",
        "id": "cond-1",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "encounter-diagnosis"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes"}]},
        "subject": {"reference": "Patient/pat-1"},
        "encounter": {"reference": "Encounter/enc-1"},
        "onsetDateTime": "2015-06",
        "recordedDate": "2015-07-01",
        "stage": [{"summary": {"text": "mild"}}],
        "evidence": [{"detail": [{"reference": "Observation/obs-1"}]}]
    })
}

pub fn medication_request() -> Value {
    json!({
        "resourceType": "MedicationRequest",
        "id": "mr-1",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]},
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2020-03-01T10:00:00Z",
        "requester": {"reference": "Practitioner/prac-1"},
        "dosageInstruction": [{
            "sequence": 1,
            "text": "1 tablet twice daily",
            "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
            "asNeededBoolean": false,
            "route": {"text": "oral"},
            "doseAndRate": [{"doseQuantity": {"value": 1}}]
        }],
        "dispenseRequest": {"numberOfRepeatsAllowed": 3, "quantity": {"value": 60}},
        "substitution": {"allowedBoolean": true}
    })
}

pub fn allergy_intolerance() -> Value {
    json!({
        "resourceType": "AllergyIntolerance",
        "id": "al-1",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "type": "allergy",
        "category": ["food"],
        "criticality": "high",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91935009", "display": "Peanut allergy"}]},
        "patient": {"reference": "Patient/pat-1"},
        "recordedDate": "2010-05-05",
        "reaction": [{"manifestation": [{"text": "hives"}], "severity": "moderate"}]
    })
}

pub fn appointment() -> Value {
    json!({
        "resourceType": "Appointment",
        "id": "ap-1",
        "status": "booked",
        "description": "Follow-up",
        "start": "2021-04-05T09:00:00Z",
        "end": "2021-04-05T09:30:00Z",
        "minutesDuration": 30,
        "participant": [
            {"actor": {"reference": "Practitioner/prac-1"}, "required": "required", "status": "accepted"},
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"}
        ]
    })
}

pub fn procedure() -> Value {
    json!({
        "resourceType": "Procedure",
        "id": "proc-1",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "73761001"}]},
        "subject": {"reference": "Patient/pat-1"},
        "performedPeriod": {"start": "2018-01-01T10:00:00Z", "end": "2018-01-01T11:00:00Z"},
        "performer": [{"actor": {"reference": "Practitioner/prac-1"}}]
    })
}

pub fn immunization() -> Value {
    json!({
        "resourceType": "Immunization",
        "id": "imm-1",
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
        "patient": {"reference": "Patient/pat-1"},
        "occurrenceDateTime": "2019-10-01T08:00:00Z",
        "primarySource": true,
        "lotNumber": "AB123",
        "doseQuantity": {"value": 0.5, "unit": "mL"},
        "performer": [{"actor": {"reference": "Practitioner/prac-1"}}],
        "protocolApplied": [{"doseNumberPositiveInt": 1}]
    })
}

pub fn care_team() -> Value {
    json!({
        "resourceType": "CareTeam",
        "id": "ct-1",
        "status": "active",
        "name": "Diabetes team",
        "subject": {"reference": "Patient/pat-1"},
        "period": {"start": "2015-07-01"},
        "participant": [{"role": [{"text": "PCP"}], "member": {"reference": "Practitioner/prac-1"}}]
    })
}

pub fn consent() -> Value {
    json!({
        "resourceType": "Consent",
        "id": "con-1",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/pat-1"},
        "dateTime": "2020-01-01",
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": "2020-01-01", "end": "2025-01-01"},
            "actor": [{"role": {"text": "grantee"}, "reference": {"reference": "Organization/org-1"}}],
            "provision": [{"type": "deny", "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]}]
        }
    })
}

pub fn service_request() -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "status": "active",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "20641000"}]},
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2020-02-15",
        "occurrenceDateTime": "2020-02-20"
    })
}

pub fn document_reference() -> Value {
    json!({
        "resourceType": "DocumentReference",
        "id": "doc-1",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "34117-2"}]},
        "subject": {"reference": "Patient/pat-1"},
        "date": "2020-03-01T12:00:00Z",
        "content": [{"attachment": {"contentType": "text/plain", "data": "aGVsbG8gd29ybGQ="}, "format": {"code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
        "context": {"encounter": [{"reference": "Encounter/enc-1"}]}
    })
}

pub fn communication() -> Value {
    json!({
        "resourceType": "Communication",
        "id": "comm-1",
        "status": "completed",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "notification"}]}],
        "subject": {"reference": "Patient/pat-1"},
        "recipient": [{"reference": "Patient/pat-1"}],
        "sender": {"reference": "Practitioner/prac-1"},
        "sent": "2020-03-01T12:00:00Z",
        "payload": [{"contentString": "Your record was opened in an emergency."}]
    })
}

/// One valid example per supported type, in SUPPORTED_TYPES order.
pub fn all() -> Vec<Value> {
    vec![
        patient(),
        practitioner(),
        organization(),
        encounter(),
        observation(),
        diagnostic_report(),
        condition(),
        medication_request(),
        allergy_intolerance(),
        appointment(),
        procedure(),
        immunization(),
        care_team(),
        consent(),
        service_request(),
        document_reference(),
        communication(),
    ]
}

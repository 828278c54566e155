-- calls: the call behind each recording (GET /v2/calls/{id}), loaded from lake/calls by UTC day.
-- from_number and to_number are personal data: the loader stores them masked as '***-***-' || last four digits,
-- unless AUDIAN_SHOW_PHONE_NUMBERS=1 was set for the load (pipeline_settings.show_phone_numbers says which).
CREATE MACRO mask_phone(number) AS '***-***-' || right(number, 4);

CREATE TABLE calls (
    call_id        VARCHAR     NOT NULL,
    from_number    VARCHAR     NOT NULL,  -- masked unless pipeline_settings.show_phone_numbers
    to_number      VARCHAR     NOT NULL,  -- masked unless pipeline_settings.show_phone_numbers
    direction      VARCHAR     NOT NULL,
    status         VARCHAR     NOT NULL,
    call_flow_id   VARCHAR,
    started_at     TIMESTAMPTZ NOT NULL,
    answered_at    TIMESTAMPTZ,
    ended_at       TIMESTAMPTZ,
    duration       INTEGER     NOT NULL,  -- seconds; final once ended_at is set
    fetched_at     TIMESTAMPTZ NOT NULL,
    partition_date DATE        NOT NULL
);
COMMENT ON TABLE calls IS 'The call of each recording; phone numbers masked unless pipeline_settings.show_phone_numbers.';

-- migrate:up
-- One row per person who has logged in through OIDC. identity_id is generated
-- by the service (UUIDv7, so new rows land at the right edge of the primary
-- key index); oidc_subject is the login key. The CHECK constraints mirror the
-- API's validation so that the database enforces what the API promises, even
-- for writes that do not come through the API.
CREATE TABLE users (
    identity_id  uuid        PRIMARY KEY,
    oidc_subject text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    email        text        NOT NULL DEFAULT '',
    photo_url    text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),

    CONSTRAINT users_oidc_subject_key UNIQUE (oidc_subject),
    CONSTRAINT users_oidc_subject_length CHECK (char_length(oidc_subject) BETWEEN 1 AND 255),
    CONSTRAINT users_name_length CHECK (char_length(name) <= 256),
    CONSTRAINT users_email_length CHECK (char_length(email) <= 254),
    CONSTRAINT users_photo_url_length CHECK (char_length(photo_url) <= 2048)
);

-- migrate:down
DROP TABLE users;

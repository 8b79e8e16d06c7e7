//! The builder: slugbuilder (Heroku buildpacks into a slug), slugrunner (runs a slug) and the slug store. Not built yet; see the slugs issue.

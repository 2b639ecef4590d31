// The participants site (/team): progressive enhancement of its plain forms. Filled by the browser side.

// placeholder, replaced by the client below
export {};
